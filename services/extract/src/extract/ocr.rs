//! OCR through the Tesseract command-line program (Debian's `tesseract-ocr` +
//! `tesseract-ocr-eng`). A child process rather than a linked library: it can be killed
//! when its time budget runs out (an in-process call could not be interrupted), and a
//! crash in it cannot take the service down. One thread per run (`OMP_THREAD_LIMIT=1`)
//! so a scan does not take both cores from every other request.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The program run; `CONFAB_TESSERACT` overrides it.
fn program() -> String {
    std::env::var("CONFAB_TESSERACT").unwrap_or_else(|_| "tesseract".into())
}

/// Whether Tesseract with English data runs here (checked once per process).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new(program())
            .arg("--list-langs")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .any(|l| l == "eng")
            })
    })
}

/// Text read from an image, with Tesseract's mean word confidence (0–100, weighted by
/// word length).
#[derive(Debug, Clone, PartialEq)]
pub struct OcrText {
    pub text: String,
    pub confidence: f32,
    pub words: usize,
    pub elapsed: Duration,
}

/// Why OCR gave nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcrError {
    Unavailable,
    TimedOut(Duration),
    Failed(String),
}

/// Largest TSV Tesseract may print for one image (a dense page is ~100 KB).
const MAX_OUTPUT: u64 = 8 << 20;

/// Recognises an 8-bit grey image (`width × height` bytes, row-major) within `budget`.
pub fn recognize_gray(
    width: u32,
    height: u32,
    pixels: &[u8],
    budget: Duration,
) -> Result<OcrText, OcrError> {
    if !available() {
        return Err(OcrError::Unavailable);
    }
    if pixels.len() as u64 != u64::from(width) * u64::from(height) {
        return Err(OcrError::Failed(
            "image buffer does not match its size".into(),
        ));
    }
    // PGM: Tesseract (leptonica) reads it without any encoding work on our side.
    let mut pgm = format!("P5\n{width} {height}\n255\n").into_bytes();
    pgm.extend_from_slice(pixels);
    let start = Instant::now();
    let mut child = Command::new(program())
        .args(["stdin", "stdout", "-l", "eng", "--psm", "3", "tsv"])
        .env("OMP_THREAD_LIMIT", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| OcrError::Failed(format!("cannot start tesseract: {e}")))?;
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let (out, waited) = std::thread::scope(|s| {
        let writer = s.spawn(move || {
            if let Some(w) = stdin.as_mut() {
                let _ = w.write_all(&pgm);
            }
            drop(stdin);
        });
        let reader = s.spawn(move || {
            let mut buf = Vec::new();
            if let Some(r) = stdout.as_mut() {
                let _ = r.take(MAX_OUTPUT).read_to_end(&mut buf);
            }
            buf
        });
        let waited = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if start.elapsed() >= budget => {
                    // Killing closes its pipes, so the writer and reader threads end too.
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(OcrError::TimedOut(budget));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => break Err(OcrError::Failed(e.to_string())),
            }
        };
        let _ = writer.join();
        (reader.join().unwrap_or_default(), waited)
    });
    let status = waited?;
    if !status.success() {
        return Err(OcrError::Failed(format!("tesseract exited with {status}")));
    }
    let mut text = parse_tsv(&String::from_utf8_lossy(&out));
    text.elapsed = start.elapsed();
    Ok(text)
}

/// Rebuilds lines and paragraphs from Tesseract's TSV (one row per word, with its block,
/// paragraph and line numbers and a confidence).
fn parse_tsv(tsv: &str) -> OcrText {
    let mut text = String::new();
    let mut last: Option<(u32, u32, u32)> = None;
    let (mut weight, mut sum, mut words) = (0f64, 0f64, 0usize);
    for row in tsv.lines().skip(1) {
        let cols: Vec<&str> = row.splitn(12, '\t').collect();
        if cols.len() < 12 || cols[0] != "5" {
            continue;
        }
        let word = cols[11].trim();
        let Ok(conf) = cols[10].parse::<f64>() else {
            continue;
        };
        if word.is_empty() || conf < 0.0 {
            continue;
        }
        let num = |i: usize| cols[i].parse::<u32>().unwrap_or(0);
        let at = (num(2), num(3), num(4));
        match last {
            Some(prev) if prev == at => text.push(' '),
            Some(prev) if (prev.0, prev.1) == (at.0, at.1) => text.push('\n'),
            Some(_) => text.push_str("\n\n"),
            None => {}
        }
        last = Some(at);
        text.push_str(word);
        let w = word.chars().count() as f64;
        weight += w;
        sum += conf * w;
        words += 1;
    }
    OcrText {
        text,
        confidence: if weight > 0.0 {
            (sum / weight) as f32
        } else {
            0.0
        },
        words,
        elapsed: Duration::ZERO,
    }
}

/// How a part read by OCR is labelled, so the context plan and "what the model saw" show
/// it without knowing about OCR: "Page 3 (OCR, 91% confidence)".
pub fn label(base: &str, confidence: f32) -> String {
    format!(
        "{base} (OCR, {:.0}% confidence)",
        confidence.clamp(0.0, 100.0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_becomes_lines_and_paragraphs() {
        let tsv = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
            1\t1\t0\t0\t0\t0\t0\t0\t10\t10\t-1\t\n\
            5\t1\t1\t1\t1\t1\t0\t0\t1\t1\t90\tHello\n\
            5\t1\t1\t1\t1\t2\t0\t0\t1\t1\t80\tworld\n\
            5\t1\t1\t1\t2\t1\t0\t0\t1\t1\t70\tnext\n\
            5\t1\t2\t1\t1\t1\t0\t0\t1\t1\t60\tpara\n";
        let t = parse_tsv(tsv);
        assert_eq!(t.text, "Hello world\nnext\n\npara");
        assert_eq!(t.words, 4);
        let want = (90.0 * 5.0 + 80.0 * 5.0 + 70.0 * 4.0 + 60.0 * 4.0) / 18.0;
        assert!((f64::from(t.confidence) - want).abs() < 1e-3);
    }
}
