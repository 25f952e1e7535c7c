//! The real-world corpus half of `make bench-files`: files other projects keep as test
//! data, through Confab and the reference libraries.
//!
//! Recall is measured as character 4-grams: case and whitespace are ignored, and the
//! reference's 4-grams are taken within each of its lines, so the order in which cells
//! and paragraphs come out does not count; each 4-gram counts as often as the reference
//! has it. PDF recall is against pdfplumber, for Confab and for pypdfium2 alike.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use confab_extract::detect::detect;
use confab_extract::extract::{Limits, extract, ocr, pdf};

/// References with fewer 4-grams than this are too short to say anything about recall.
const MIN_GRAMS: usize = 50;

/// (format, primary reference, second reference compared with Confab, speed target ×)
const FORMATS: &[(&str, &str, Option<&str>, f64)] = &[
    ("pdf", "pdfplumber", Some("pypdfium2"), 20.0),
    ("docx", "python-docx", None, 5.0),
    ("xlsx", "openpyxl", None, 10.0),
    ("xls", "xlrd", None, 0.0),
    ("ods", "odfpy", None, 0.0),
    ("pptx", "python-pptx", None, 0.0),
];

fn corpus_dir() -> PathBuf {
    std::env::var_os("CONFAB_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"))
}

fn grams(text: &str, per_line: bool) -> HashMap<[char; 4], u32> {
    let mut out = HashMap::new();
    let lines: Vec<&str> = if per_line {
        text.lines().collect()
    } else {
        vec![text]
    };
    for line in lines {
        let chars: Vec<char> = line
            .chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect();
        for w in chars.windows(4) {
            *out.entry([w[0], w[1], w[2], w[3]]).or_insert(0) += 1;
        }
    }
    out
}

/// Share of the reference's 4-grams (within its lines) found in `ours`; None when the
/// reference is too short.
fn recall(reference: &str, ours: &str) -> Option<f64> {
    let r = grams(reference, true);
    let total: u32 = r.values().sum();
    if (total as usize) < MIN_GRAMS {
        return None;
    }
    let o = grams(ours, false);
    let found: u32 = r
        .iter()
        .map(|(g, n)| (*n).min(o.get(g).copied().unwrap_or(0)))
        .sum();
    Some(f64::from(found) / f64::from(total))
}

struct Ours {
    text: Result<String, String>,
    secs: f64,
}

fn confab(path: &Path) -> Ours {
    let data = std::fs::read(path).expect("read corpus file");
    let mut limits = Limits::new(Duration::from_secs(20));
    limits.max_sheet_rows = usize::MAX;
    // The references do not OCR; OCR is measured on its own below.
    limits.ocr = false;
    let start = Instant::now();
    let text = detect(&data, &path.to_string_lossy())
        .and_then(|d| extract(d, &data, &limits))
        .map(|ex| {
            ex.parts
                .iter()
                .map(|p| p.text.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .map_err(|e| e.to_string());
    Ours {
        text,
        secs: start.elapsed().as_secs_f64(),
    }
}

fn references(venv: &Path, here: &Path, files: &[PathBuf]) -> Option<serde_json::Value> {
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    let cache = PathBuf::from(home).join(".cache/confab/bench-ref");
    let mut child = Command::new(venv.join("bin/python"))
        .arg(here.join("bench_corpus.py"))
        .arg(&cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let list: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    std::io::Write::write_all(child.stdin.as_mut()?, list.as_bytes()).ok()?;
    drop(child.stdin.take());
    let out = child.wait_with_output().ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Prints the corpus tables; true when every target is met.
pub fn run(venv: &Path, here: &Path) -> bool {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = Vec::new();
    for (fmt, ..) in FORMATS {
        if let Ok(rd) = std::fs::read_dir(dir.join(fmt)) {
            files.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
    files.sort();
    if files.is_empty() {
        println!(
            "\nreal-world corpus: none at {} (set CONFAB_CORPUS_DIR)",
            dir.display()
        );
        return false;
    }
    println!(
        "\nreal-world corpus: {} files from {} (reference results cached in ~/.cache/confab/bench-ref)",
        files.len(),
        dir.display()
    );
    let Some(refs) = references(venv, here, &files) else {
        println!("the reference extractors failed; corpus not measured");
        return false;
    };
    // Warm-up: token tables, the pdfium binding.
    let _ = confab(&files[0]);
    let mut met = true;
    println!(
        "format  files  refused (refs refuse too)  recall confab  recall 2nd ref  files <½ of 2nd  confab s  ref s   speed-up  target"
    );
    let mut low_files = Vec::new();
    let mut wrongly_refused = Vec::new();
    for &(fmt, primary, second, speed_target) in FORMATS {
        let of_fmt: Vec<&PathBuf> = files
            .iter()
            .filter(|f| {
                f.parent()
                    .and_then(|p| p.file_name())
                    .is_some_and(|n| n == fmt)
            })
            .collect();
        if of_fmt.is_empty() {
            continue;
        }
        let (mut refused, mut refused_too) = (0, 0);
        let (mut ours_r, mut second_r) = (Vec::new(), Vec::new());
        let (mut ours_secs, mut ref_secs) = (0.0, 0.0);
        let mut below_half = 0;
        for path in of_fmt.iter().copied() {
            let entry = &refs[path.to_string_lossy().as_ref()];
            let p = &entry[primary];
            let p_text = p["text"].as_str();
            let s_text = second.and_then(|s| entry[s]["text"].as_str());
            let ours = confab(path);
            match &ours.text {
                Err(e) => {
                    refused += 1;
                    if p_text.is_none() && second.is_none_or(|_| s_text.is_none()) {
                        refused_too += 1;
                    } else if p_text.is_some_and(|t| grams(t, true).len() >= 4)
                        || s_text.is_some_and(|t| grams(t, true).len() >= 4)
                    {
                        wrongly_refused.push(format!("{} ({e})", path.display()));
                    } else {
                        refused_too += 1; // the references read nothing but whitespace
                    }
                }
                Ok(text) => {
                    if let Some(reference) = p_text {
                        ours_secs += ours.secs;
                        ref_secs += p["secs"].as_f64().unwrap_or(0.0);
                        if let Some(r) = recall(reference, text) {
                            ours_r.push(r);
                            if let Some(s) = s_text.and_then(|s| recall(reference, s)) {
                                second_r.push(s);
                                if r < s / 2.0 {
                                    below_half += 1;
                                    low_files.push(format!(
                                        "{}: confab {r:.3}, {} {s:.3}",
                                        path.display(),
                                        second.unwrap_or("")
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
        let speed = ref_secs / ours_secs;
        let recall_ok = match fmt {
            "pdf" => mean(&ours_r) >= mean(&second_r) && below_half == 0,
            "docx" | "xlsx" => mean(&ours_r) >= 0.98,
            _ => true,
        };
        let speed_ok = speed >= speed_target;
        met &= recall_ok && speed_ok;
        println!(
            "{fmt:<6}  {:>5}  {:>7} ({:>3})            {:>6.3} ({:>3})  {:>14}  {:>15}  {:>8.3}  {:>6.2}  {:>7.1}×  {:>5}  {}",
            of_fmt.len(),
            refused,
            refused_too,
            mean(&ours_r),
            ours_r.len(),
            if second.is_some() {
                format!("{:.3} ({})", mean(&second_r), second_r.len())
            } else {
                "-".into()
            },
            if second.is_some() {
                below_half.to_string()
            } else {
                "-".into()
            },
            ours_secs,
            ref_secs,
            speed,
            if speed_target > 0.0 {
                format!("{speed_target}×")
            } else {
                "-".into()
            },
            if recall_ok && speed_ok {
                "ok"
            } else {
                "BELOW TARGET"
            }
        );
    }
    for f in &low_files {
        println!("  below half of the second reference: {f}");
    }
    for f in &wrongly_refused {
        println!("  refused although a reference reads it: {f}");
    }
    met &= wrongly_refused.is_empty();
    met &= ocr_page(&dir);
    met
}

/// A scan made from a real page: rendered by pdfium as OCR sees it, read by Tesseract,
/// compared (4-gram recall) with the page's own text layer.
fn ocr_page(dir: &Path) -> bool {
    let path = dir.join("pdf/pdfjs-issue13447.pdf");
    let fallback = std::fs::read_dir(dir.join("pdf"))
        .ok()
        .and_then(|mut rd| rd.find_map(|e| e.ok().map(|e| e.path())));
    let path = if path.exists() {
        path
    } else {
        fallback.unwrap_or(path)
    };
    let Ok(data) = std::fs::read(&path) else {
        return false;
    };
    let budget = Limits::new(Duration::from_secs(20)).ocr_page_budget;
    let Some((w, h, gray)) = pdf::render_page_gray(&data, 0) else {
        println!("OCR: pdfium could not render {}", path.display());
        return false;
    };
    let mut limits = Limits::new(Duration::from_secs(20));
    limits.ocr = false;
    let layer = extract(confab_extract::Detected::Pdf, &data, &limits)
        .ok()
        .and_then(|ex| ex.parts.first().map(|p| p.text.clone()))
        .unwrap_or_default();
    match ocr::recognize_gray(w, h, &gray, budget) {
        Ok(t) => {
            let r = recall(&layer, &t.text).unwrap_or(f64::NAN);
            let ok = t.elapsed <= budget;
            println!(
                "OCR of a scanned page ({}, page 1, {w}×{h} px): {:.2} s (budget {} s), {} words, {:.0}% confidence, 4-gram recall vs its text layer {r:.3}  {}",
                path.file_name().unwrap_or_default().to_string_lossy(),
                t.elapsed.as_secs_f64(),
                budget.as_secs(),
                t.words,
                t.confidence,
                if ok { "ok" } else { "BELOW TARGET" }
            );
            ok
        }
        Err(e) => {
            println!("OCR of a scanned page failed: {e:?}");
            false
        }
    }
}
