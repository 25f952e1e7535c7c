//! The real-world corpus (`../shared/corpus`, files other projects keep as test data; or
//! `CONFAB_CORPUS_DIR`): every file is read or refused with a clear message inside the
//! time budget, each format reads most of its files, and pdfium, the new formats and OCR
//! give the text known to be in particular files. The corpus must exist: a missing one
//! fails with the path it looked in (this machine and CI have it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use confab_extract::detect::detect;
use confab_extract::extract::{Extracted, Limits, extract, ocr, pdf};
use confab_extract::types::FileKind;

fn corpus() -> PathBuf {
    let dir = std::env::var_os("CONFAB_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"));
    assert!(
        dir.join("pdf").is_dir(),
        "the real-world corpus is missing at {} (set CONFAB_CORPUS_DIR to its folder)",
        dir.display()
    );
    dir
}

fn read(path: &Path, ocr: bool) -> Result<Extracted, String> {
    let data = std::fs::read(path).unwrap();
    let mut limits = Limits::new(Duration::from_secs(20));
    limits.ocr = ocr;
    detect(&data, &path.to_string_lossy())
        .and_then(|d| extract(d, &data, &limits))
        .map_err(|e| e.to_string())
}

fn text(ex: &Extracted) -> String {
    ex.parts
        .iter()
        .map(|p| p.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn file(rel: &str) -> PathBuf {
    corpus().join(rel)
}

#[test]
fn every_file_is_read_or_refused_clearly_within_the_budget() {
    let dir = corpus();
    // Least share of each format's files that must be read (the rest are encrypted,
    // deliberately broken or empty files the reference libraries refuse too).
    for (fmt, least) in [
        ("pdf", 0.97),
        ("docx", 0.95),
        ("xlsx", 0.95),
        ("xls", 0.85),
        ("ods", 1.0),
        ("pptx", 0.95),
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(fmt))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let mut refused = Vec::new();
        for path in &files {
            let start = Instant::now();
            let got = read(path, false);
            assert!(
                start.elapsed() < Duration::from_secs(21),
                "{} took {:?}",
                path.display(),
                start.elapsed()
            );
            if let Err(e) = got {
                assert!(
                    !e.is_empty() && !e.contains("internal"),
                    "{}: {e}",
                    path.display()
                );
                refused.push(format!(
                    "{}: {e}",
                    path.file_name().unwrap().to_string_lossy()
                ));
            }
        }
        let read_share = 1.0 - refused.len() as f64 / files.len() as f64;
        assert!(
            read_share >= least,
            "{fmt}: read {read_share:.3} of {} files (want ≥ {least}); refused:\n{}",
            files.len(),
            refused.join("\n")
        );
    }
}

#[test]
fn each_new_format_gives_its_text() {
    let ods = read(&file("ods/poi-SampleSS.ods"), false);
    let ods = ods.unwrap_or_else(|e| panic!("ods: {e}"));
    assert_eq!(ods.kind, FileKind::Ods);
    assert!(!ods.parts.is_empty() && ods.parts.iter().all(|p| p.label.starts_with("Sheet ")));
    let mut pptx_slides = 0;
    for entry in std::fs::read_dir(corpus().join("pptx")).unwrap() {
        if let Ok(ex) = read(&entry.unwrap().path(), false) {
            assert_eq!(ex.kind, FileKind::Pptx);
            pptx_slides += ex.parts.len();
        }
    }
    assert!(pptx_slides >= 35, "{pptx_slides} slides in the PPTX files");
    let mut xls_cells = 0;
    for entry in std::fs::read_dir(corpus().join("xls")).unwrap() {
        if let Ok(ex) = read(&entry.unwrap().path(), false) {
            assert_eq!(ex.kind, FileKind::Xls);
            xls_cells += ex.parts.iter().map(|p| p.tables.len()).sum::<usize>();
        }
    }
    assert!(xls_cells >= 60, "{xls_cells} sheet tables in the XLS files");
}

#[test]
fn pdfium_reads_pages_with_their_words_spaced() {
    let ex = read(&file("pdf/pdfjs-issue13447.pdf"), false).unwrap();
    let t = text(&ex);
    let words = t.split_whitespace().count();
    assert!(words >= 400, "{words} words");
    // Words glued together would make long runs without spaces.
    let glued = t
        .split_whitespace()
        .filter(|w| w.chars().count() > 30)
        .count();
    assert!(
        glued * 50 < words,
        "{glued} of {words} words look glued: {t:.400}"
    );
    assert!(
        ex.warnings.iter().all(|w| !w.contains("basic engine")),
        "{:?}",
        ex.warnings
    );
}

/// A scan made from a real page (rendered as OCR sees it, saved as PNG) and uploaded as an
/// image: its text comes back marked as OCR with a confidence.
#[test]
fn a_scanned_page_is_read_by_ocr() {
    assert!(
        ocr::available(),
        "tesseract is not installed (scripts/install-pdfium.sh)"
    );
    let data = std::fs::read(file("pdf/pdfjs-issue13447.pdf")).unwrap();
    let (w, h, gray) = pdf::render_page_gray(&data, 0).expect("pdfium renders the page");
    let img = image::GrayImage::from_raw(w, h, gray).unwrap();
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let mut limits = Limits::new(Duration::from_secs(20));
    limits.ocr_page_budget = Duration::from_secs(15);
    let ex = extract(detect(&png, "scan.png").unwrap(), &png, &limits).unwrap();
    let part = ex.parts.first().expect("an OCR part");
    let conf = part.ocr_confidence.expect("marked as OCR");
    assert!(conf >= 60, "confidence {conf}");
    assert!(part.label.contains("OCR"), "{}", part.label);
    let layer = text(&read(&file("pdf/pdfjs-issue13447.pdf"), false).unwrap()).to_lowercase();
    let ocr_words: std::collections::HashSet<String> = part
        .text
        .split_whitespace()
        .map(|w| w.to_lowercase())
        .collect();
    let layer_words: Vec<&str> = layer.split_whitespace().filter(|w| w.len() >= 5).collect();
    let found = layer_words
        .iter()
        .filter(|w| ocr_words.contains(**w))
        .count();
    assert!(
        found * 10 >= layer_words.len() * 6,
        "OCR found {found} of {} longer words",
        layer_words.len()
    );
}

/// The same real page as a PDF that holds only its picture (what a scanner writes): the
/// page has no text layer, so OCR reads it, within its budget, and the part says so.
#[test]
fn a_pdf_page_without_a_text_layer_is_read_by_ocr() {
    use lopdf::{Object, Stream, dictionary};
    use std::io::Write;
    let data = std::fs::read(file("pdf/pdfjs-issue13447.pdf")).unwrap();
    let (w, h, gray) = pdf::render_page_gray(&data, 0).expect("pdfium renders the page");
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&gray).unwrap();
    let mut doc = lopdf::Document::with_version("1.5");
    let image = doc.add_object(Stream::new(
        dictionary! {
            "Type" => "XObject", "Subtype" => "Image", "Width" => w as i64, "Height" => h as i64,
            "ColorSpace" => "DeviceGray", "BitsPerComponent" => 8, "Filter" => "FlateDecode",
        },
        z.finish().unwrap(),
    ));
    let (pw, ph) = (
        612.0 * w as f32 / w.max(h) as f32,
        792.0 * h as f32 / w.max(h) as f32,
    );
    let content = doc.add_object(Stream::new(
        dictionary! {},
        format!("q {pw} 0 0 {ph} 0 0 cm /Im1 Do Q").into_bytes(),
    ));
    let pages = doc.new_object_id();
    let page = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages, "Contents" => content,
        "MediaBox" => vec![0.into(), 0.into(), Object::Real(pw), Object::Real(ph)],
        "Resources" => dictionary! { "XObject" => dictionary! { "Im1" => image } },
    });
    doc.objects.insert(
        pages,
        Object::Dictionary(
            dictionary! { "Type" => "Pages", "Kids" => vec![page.into()], "Count" => 1 },
        ),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages });
    doc.trailer.set("Root", catalog);
    let mut scan = Vec::new();
    doc.save_to(&mut scan).unwrap();

    let mut limits = Limits::new(Duration::from_secs(20));
    limits.ocr_page_budget = Duration::from_secs(15);
    let start = Instant::now();
    let ex = extract(detect(&scan, "scan.pdf").unwrap(), &scan, &limits).unwrap();
    let took = start.elapsed();
    let page = &ex.parts[0];
    assert!(
        page.ocr_confidence.is_some_and(|c| c >= 60),
        "{:?}",
        page.ocr_confidence
    );
    assert!(page.label.starts_with("Page 1 (OCR, "), "{}", page.label);
    assert!(page.text.split_whitespace().count() >= 300, "{}", page.text);
    assert!(
        ex.warnings.iter().any(|w| w.contains("read by OCR")),
        "{:?}",
        ex.warnings
    );
    assert!(took < Duration::from_secs(16), "{took:?}");

    // Without OCR (or past its page cap) the page is empty and the warning says why.
    limits = Limits::new(Duration::from_secs(20));
    limits.max_ocr_pages = 0;
    let ex = extract(detect(&scan, "scan.pdf").unwrap(), &scan, &limits).unwrap();
    assert!(ex.parts[0].text.is_empty() && ex.parts[0].ocr_confidence.is_none());
    assert!(
        ex.warnings.iter().any(|w| w.contains("at most 0 pages")),
        "{:?}",
        ex.warnings
    );
}
