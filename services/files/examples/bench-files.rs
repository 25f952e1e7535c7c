//! `make bench-files`: extracts one generated corpus (PDF, DOCX, XLSX) with Confab and, in
//! the same run, with the seed's Python stack (pdfplumber, python-docx, openpyxl in a venv
//! at ~/.cache/confab/bench-venv, created by bench-venv.sh), then prints per-format
//! throughput ratios and how much of the reference text Confab recovered.
//! Targets: ≥ 20× pdfplumber, ≥ 5× python-docx, ≥ 10× openpyxl, no text lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use confab_extract::corpus::{self, Cell, DocBlock};
use confab_extract::detect::detect;
use confab_extract::extract::{Limits, extract};

const BUDGET_SECS: f64 = 4.0;

fn corpus_files(dir: &Path) -> Vec<(&'static str, PathBuf, f64)> {
    let pages: Vec<Vec<String>> = (0..20)
        .map(|p| {
            (0..40)
                .map(|l| format!("{p}.{l} {}", corpus::words((p * 40 + l) as u64, 10)))
                .collect()
        })
        .collect();
    let mut blocks = Vec::new();
    for s in 0..10u64 {
        blocks.push(DocBlock::Heading(
            1,
            format!("Section {s} {}", corpus::words(s, 3)),
        ));
        for p in 0..25 {
            blocks.push(DocBlock::Para(corpus::words(s * 100 + p, 40)));
        }
        for b in 0..5 {
            blocks.push(DocBlock::Bullet(corpus::words(s * 1000 + b, 8)));
        }
        let mut rows = vec![vec![
            "Item".into(),
            "Region".into(),
            "Amount".into(),
            "Note".into(),
        ]];
        for r in 0..10u64 {
            rows.push(vec![
                format!("item{r}"),
                corpus::words(r + s, 1),
                format!("{}", r * 17 + s),
                corpus::words(r * 7 + s, 4),
            ]);
        }
        blocks.push(DocBlock::Table(rows));
    }
    let sheet = |seed: u64| -> Vec<Vec<Cell>> {
        let mut rows = vec![
            ["Region", "Product", "Units", "Price", "Date", "Total"]
                .iter()
                .map(|h| Cell::Str(h.to_string()))
                .collect(),
        ];
        for r in 0..1500u64 {
            rows.push(vec![
                Cell::Str(corpus::words(seed + r, 1)),
                Cell::Str(corpus::words(seed * 7 + r, 2)),
                Cell::Num((r % 97) as f64),
                Cell::Num(((r * 37) % 1000) as f64 / 4.0),
                Cell::Date(45000.0 + (r % 365) as f64),
                Cell::Formula(
                    format!("C{}*D{}", r + 2, r + 2),
                    (r % 97) as f64 * (((r * 37) % 1000) as f64 / 4.0),
                ),
            ]);
        }
        rows
    };
    let files = [
        ("pdf", "corpus.pdf", corpus::pdf(&pages), 20.0),
        ("docx", "corpus.docx", corpus::docx(&blocks), 5.0),
        (
            "xlsx",
            "corpus.xlsx",
            corpus::xlsx(&[("Sales", sheet(1)), ("Returns", sheet(2))]),
            10.0,
        ),
    ];
    files
        .into_iter()
        .map(|(fmt, name, bytes, target)| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).expect("write corpus");
            (fmt, path, target)
        })
        .collect()
}

/// Words for recovery: lowercase alphanumerics; "12.0" → "12"; times of midnight dropped.
fn words(text: &str) -> HashMap<String, usize> {
    let text = text.replace(" 00:00:00", "");
    let mut out = HashMap::new();
    for w in text.split(|c: char| !(c.is_alphanumeric() || c == '.')) {
        let w = w.trim_matches('.');
        let w = w.strip_suffix(".0").unwrap_or(w);
        if !w.is_empty() {
            *out.entry(w.to_lowercase()).or_insert(0) += 1;
        }
    }
    out
}

fn recovery(reference: &str, ours: &str) -> f64 {
    let (r, o) = (words(reference), words(ours));
    let total: usize = r.values().sum();
    let found: usize = r
        .iter()
        .map(|(w, n)| (*n).min(o.get(w).copied().unwrap_or(0)))
        .sum();
    if total == 0 {
        1.0
    } else {
        found as f64 / total as f64
    }
}

fn confab(path: &Path) -> (f64, usize, String) {
    let data = std::fs::read(path).expect("read corpus");
    let run = || {
        let mut limits = Limits::new(Duration::from_secs(60));
        // Full sheets, so the text comparison is like for like.
        limits.max_sheet_rows = usize::MAX;
        let detected = detect(&data, &path.to_string_lossy()).expect("detect");
        let ex = extract(detected, &data, &limits).expect("extract");
        ex.parts
            .iter()
            .map(|p| p.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let _ = run(); // warm-up (tokenizer tables)
    let start = Instant::now();
    let mut n = 0;
    let mut text;
    loop {
        text = run();
        n += 1;
        if start.elapsed().as_secs_f64() > BUDGET_SECS && n >= 3 {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64() / n as f64;
    let t = Instant::now();
    let tokens = confab_extract::tokens::count(&text);
    println!(
        "  {}: {tokens} tokens (counting them as one plain text: {:.2} ms; the whole extraction: {:.2} ms)",
        path.file_name().unwrap_or_default().to_string_lossy(),
        t.elapsed().as_secs_f64() * 1e3,
        secs * 1e3
    );
    (secs, n, text)
}

fn main() {
    let dir = std::env::temp_dir().join(format!("confab-bench-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let files = corpus_files(&dir);
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    let venv = PathBuf::from(home).join(".cache/confab/bench-venv");
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let ok = Command::new("bash")
        .arg(here.join("bench-venv.sh"))
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    let python: Option<serde_json::Value> = ok
        .then(|| {
            let out = Command::new(venv.join("bin/python"))
                .arg(here.join("bench_extract.py"))
                .arg(&dir)
                .arg(BUDGET_SECS.to_string())
                .output()
                .ok()?;
            if !out.status.success() {
                eprintln!(
                    "python side failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return None;
            }
            serde_json::from_slice(&out.stdout).ok()
        })
        .flatten();
    if python.is_none() {
        eprintln!("the Python baseline is unavailable; printing Confab timings only");
    }
    println!("format  size      confab/file  seed/file   speed-up  target  text recovered");
    let mut all_met = true;
    for (fmt, path, target) in files {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let (secs, iters, text) = confab(&path);
        match python.as_ref().and_then(|p| p.get(fmt)) {
            Some(p) => {
                let py_secs = p["secs"].as_f64().unwrap_or(f64::NAN);
                let reference = p["text"].as_str().unwrap_or_default();
                let ratio = py_secs / secs;
                let rec = recovery(reference, &text);
                let met = ratio >= target && rec >= 0.999;
                all_met &= met;
                println!(
                    "{fmt:<6}  {:>6} KB  {:>9.2} ms  {:>8.2} ms  {:>7.1}×  {:>5}×  {:>6.2}%  {}  ({iters}/{} iterations)",
                    size / 1024,
                    secs * 1e3,
                    py_secs * 1e3,
                    ratio,
                    target,
                    rec * 100.0,
                    if met { "ok" } else { "BELOW TARGET" },
                    p["iters"]
                );
            }
            None => println!(
                "{fmt:<6}  {:>6} KB  {:>9.2} ms  ({iters} iterations)",
                size / 1024,
                secs * 1e3
            ),
        }
    }
    println!(
        "{}",
        if all_met {
            "all targets met"
        } else {
            "some targets not met (see above)"
        }
    );
    let _ = std::fs::remove_dir_all(&dir);
}
