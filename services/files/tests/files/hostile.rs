//! Hostile and broken files: each is refused with a clear INVALID_ARGUMENT, quickly, and
//! the service keeps working (a normal upload succeeds right after).

use std::io::{Cursor, Write};
use std::time::{Duration, Instant};

use confab_extract::corpus::{self, Cell, DocBlock};
use lopdf::{Document, Object, Stream, dictionary};
use tonic::Code;

use crate::*;

async fn refused(app: &mut App, name: &str, data: &[u8], needle: &str) {
    let started = Instant::now();
    assert_code(
        upload(&mut app.client, "mallory", name, data).await,
        Code::InvalidArgument,
        needle,
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{name} took {:?}",
        started.elapsed()
    );
    // Still serving.
    let ok = upload_ok(
        &mut app.client,
        "mallory",
        "fine.txt",
        format!("fine after {name}").as_bytes(),
    )
    .await;
    assert_eq!(ok.kind, confab_proto::files::v1::FileKind::Text as i32);
}

/// A ZIP whose `entry` inflates to `size` bytes of zeros.
fn bomb(names: &[(&str, &[u8])], entry: &str, size: usize) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(size > u32::MAX as usize / 2);
    for (n, data) in names {
        w.start_file(*n, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.start_file(entry, opts).unwrap();
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..size >> 20 {
        w.write_all(&zeros).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[tokio::test]
async fn zip_bombs_in_docx_and_xlsx_are_refused() {
    let mut app = spawn_app().await;
    let docx = bomb(&[], "word/document.xml", 300 << 20);
    assert!(docx.len() < 10 << 20, "the bomb is small: {}", docx.len());
    refused(&mut app, "bomb.docx", &docx, "zip bomb").await;
    // The bomb is the sheet the workbook points at (parts nobody reads are never inflated).
    let xlsx = bomb(
        &[
            (
                "xl/workbook.xml",
                br#"<workbook xmlns:r="r"><sheets><sheet name="S" r:id="rId1"/></sheets></workbook>"#,
            ),
            (
                "xl/_rels/workbook.xml.rels",
                br#"<Relationships><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#,
            ),
        ],
        "xl/worksheets/sheet1.xml",
        300 << 20,
    );
    refused(&mut app, "bomb.xlsx", &xlsx, "zip bomb").await;
}

#[tokio::test]
async fn archives_with_too_many_entries_are_refused() {
    let mut app = spawn_app().await;
    let mut entries: Vec<(String, Vec<u8>)> =
        vec![("word/document.xml".into(), b"<w:document/>".to_vec())];
    for i in 0..6000 {
        entries.push((format!("word/media/{i}.xml"), Vec::new()));
    }
    let refs: Vec<(&str, Vec<u8>)> = entries
        .iter()
        .map(|(n, d)| (n.as_str(), d.clone()))
        .collect();
    refused(&mut app, "many.docx", &corpus::zip(&refs), "entries").await;
}

fn pdf_with(mut edit: impl FnMut(&mut Document, (u32, u16), (u32, u16))) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let content = doc.add_object(Stream::new(
        dictionary! {},
        b"BT /F1 12 Tf (hi) Tj ET".to_vec(),
    ));
    let page_id =
        doc.add_object(dictionary! {"Type" => "Page", "Parent" => pages_id, "Contents" => content});
    doc.objects.insert(
        pages_id,
        Object::Dictionary(
            dictionary! {"Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1},
        ),
    );
    let catalog = doc.add_object(dictionary! {"Type" => "Catalog", "Pages" => pages_id});
    doc.trailer.set("Root", catalog);
    edit(&mut doc, pages_id, page_id);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

#[tokio::test]
async fn pdf_reference_loops_and_stream_bombs_are_refused() {
    let mut app = spawn_app().await;
    // The page tree's only kid is the tree itself.
    let looped = pdf_with(|doc, pages, _| {
        doc.objects.insert(
            pages,
            Object::Dictionary(
                dictionary! {"Type" => "Pages", "Kids" => vec![pages.into()], "Count" => 1},
            ),
        );
    });
    refused(&mut app, "loop.pdf", &looped, "no readable pages").await;
    // A page whose content stream inflates to 100 MB.
    let bomb = pdf_with(|doc, _, page| {
        let mut s = Stream::new(dictionary! {}, vec![b' '; 100 << 20]);
        s.compress().unwrap();
        let id = doc.add_object(s);
        doc.get_dictionary_mut(page).unwrap().set("Contents", id);
    });
    assert!(bomb.len() < 10 << 20);
    refused(&mut app, "bomb.pdf", &bomb, "inflates beyond").await;
    // Contents pointing at itself.
    let self_ref = pdf_with(|doc, _, page| {
        doc.get_dictionary_mut(page).unwrap().set("Contents", page);
        doc.get_dictionary_mut(page).unwrap().set("Parent", page);
    });
    // Either refused or read as an empty page: never a hang or a crash.
    if let Ok(r) = upload(&mut app.client, "mallory", "self.pdf", &self_ref).await {
        assert!(r.file.is_some());
    }
    let ok = upload_ok(
        &mut app.client,
        "mallory",
        "ok.pdf",
        &corpus::pdf(&[vec!["fine".into()]]),
    )
    .await;
    assert_eq!(ok.part_count, 1);
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

#[tokio::test]
async fn enormous_declared_image_dimensions_are_refused_before_decoding() {
    let mut app = spawn_app().await;
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    png_chunk(&mut png, b"IEND", &[]);
    refused(&mut app, "huge.png", &png, "megapixels").await;
}

#[tokio::test]
async fn truncated_and_corrupt_files_are_refused() {
    let mut app = spawn_app().await;
    let pdf = corpus::pdf(&[vec!["hello".into()]]);
    refused(&mut app, "cut.pdf", &pdf[..60], "pdf").await;
    let docx = corpus::docx(&[DocBlock::Para("hello".into())]);
    refused(&mut app, "cut.docx", &docx[..docx.len() / 2], "corrupt").await;
    let xlsx = corpus::xlsx(&[("S", vec![vec![Cell::Num(1.0)]])]);
    refused(&mut app, "cut.xlsx", &xlsx[..xlsx.len() / 2], "corrupt").await;
    for format in [
        image::ImageFormat::Png,
        image::ImageFormat::Jpeg,
        image::ImageFormat::Gif,
        image::ImageFormat::WebP,
    ] {
        let img = corpus::image(format, 200, 100);
        refused(&mut app, "cut.img", &img[..img.len() / 3], "image").await;
    }
    // Word XML that is not XML.
    let broken = corpus::zip(&[(
        "word/document.xml",
        b"<w:document><w:body><w:p></w:body>".to_vec(),
    )]);
    refused(&mut app, "broken.docx", &broken, "malformed").await;
}

#[tokio::test]
async fn wrong_extensions_and_unsupported_types() {
    let mut app = spawn_app().await;
    let elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0>\0\x01\0\0\0";
    let e = assert_code(
        upload(&mut app.client, "mallory", "report.docx", elf).await,
        Code::InvalidArgument,
        "supported",
    );
    assert!(e.message().contains("PDF"), "{}", e.message());
    refused(
        &mut app,
        "data.xlsx",
        &[0u8, 159, 146, 150, 0, 1, 2, 3, 0, 0, 9],
        "binary",
    )
    .await;
    refused(
        &mut app,
        "slides.docx",
        &corpus::zip(&[("ppt/presentation.xml", b"<p/>".to_vec())]),
        "PowerPoint",
    )
    .await;
    refused(
        &mut app,
        "latin1.txt",
        b"caf\xe9 au lait, cr\xe8me br\xfbl\xe9e",
        "UTF-8",
    )
    .await;
    // A PDF called .txt is a PDF.
    let pdf = upload_ok(
        &mut app.client,
        "mallory",
        "notes.txt",
        &corpus::pdf(&[vec!["x".into()]]),
    )
    .await;
    assert_eq!(pdf.mime_type, "application/pdf");
}

#[tokio::test]
async fn sparse_sheets_do_not_allocate_their_declared_grid() {
    let mut app = spawn_app().await;
    let sheet = r#"<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><dimension ref="A1:XFD1048576"/><sheetData><row r="1"><c r="A1"><v>1</v></c></row><row r="1048576"><c r="XFD1048576"><v>2</v></c></row></sheetData></worksheet>"#;
    let book = corpus::xlsx(&[("S", vec![vec![Cell::Num(0.0)]])]);
    // Replace the generated sheet with the sparse one.
    let book = corpus::with_entry(&book, "xl/worksheets/sheet1.xml", sheet.as_bytes());
    let info = upload_ok(&mut app.client, "mallory", "sparse.xlsx", &book).await;
    let ex = extraction(&mut app.client, "mallory", &info.id).await;
    let s = ex.parts[0].sheet.as_ref().unwrap();
    assert_eq!((s.total_rows, s.total_columns), (2, 16384));
    assert!(s.omitted_note.contains("columns"), "{}", s.omitted_note);
}

#[test]
fn an_exhausted_time_budget_is_a_clear_error() {
    use confab_extract::detect::Detected;
    use confab_extract::extract::{Limits, extract};
    let mut limits = Limits::new(Duration::from_secs(5));
    limits.deadline = Instant::now() - Duration::from_secs(1);
    let pdf = corpus::pdf(&[vec!["x".into()]]);
    let e = extract(Detected::Pdf, &pdf, &limits).unwrap_err();
    assert!(e.to_string().contains("too long"), "{e}");
}
