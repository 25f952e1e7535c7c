//! The generated corpus: text and structure come out of every format.

use confab_extract::corpus::{self, Cell, DocBlock};
use confab_proto::files::v1::*;
use tonic::Code;

use crate::*;

fn lines(page: usize, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "Page {page} line {i}: {}",
                corpus::words((page * 100 + i) as u64, 8)
            )
        })
        .collect()
}

#[tokio::test]
async fn pdf_is_extracted_per_page_with_token_counts() {
    let mut app = spawn_app().await;
    let pages: Vec<Vec<String>> = (1..=3).map(|p| lines(p, 5)).collect();
    let pdf = corpus::pdf(&pages);
    let info = upload_ok(&mut app.client, "alice", "report.bin", &pdf).await;
    assert_eq!(info.kind, FileKind::Pdf as i32);
    assert_eq!(info.mime_type, "application/pdf");
    assert_eq!(info.part_count, 3);
    assert_eq!(info.extraction_status, ExtractionStatus::Done as i32);
    let ex = extraction(&mut app.client, "alice", &info.id).await;
    assert_eq!(ex.parts.len(), 3);
    for (i, part) in ex.parts.iter().enumerate() {
        assert_eq!(part.kind, PartKind::Page as i32);
        assert_eq!(part.index as usize, i + 1);
        assert_eq!(part.label, format!("Page {}", i + 1));
        for line in &pages[i] {
            assert!(
                part.text.contains(line.as_str()),
                "page {i}: {:?} lacks {line:?}",
                part.text
            );
        }
        assert!(part.token_count > 20);
    }
    let sum: u32 = ex.parts.iter().map(|p| p.token_count).sum();
    assert_eq!(ex.total_tokens, sum);
    assert_eq!(info.token_count, sum);
}

#[tokio::test]
async fn docx_keeps_headings_lists_and_tables() {
    let mut app = spawn_app().await;
    let doc = corpus::docx(&[
        DocBlock::Heading(1, "Introduction".into()),
        DocBlock::Para("Confab reads Word documents & keeps structure.".into()),
        DocBlock::Heading(2, "Goals".into()),
        DocBlock::Bullet("first goal".into()),
        DocBlock::Bullet("second goal".into()),
        DocBlock::Numbered(0, "install".into()),
        DocBlock::Numbered(1, "download".into()),
        DocBlock::Numbered(1, "unpack".into()),
        DocBlock::Numbered(0, "run".into()),
        DocBlock::Numbered(1, "start it".into()),
        DocBlock::Heading(1, "Numbers".into()),
        DocBlock::Table(vec![
            vec!["Name".into(), "Qty".into()],
            vec!["apples".into(), "3".into()],
            vec!["pears | plums".into(), "5".into()],
        ]),
        DocBlock::Para("After the table.".into()),
    ]);
    let info = upload_ok(&mut app.client, "alice", "notes.docx", &doc).await;
    assert_eq!(info.kind, FileKind::Docx as i32);
    let ex = extraction(&mut app.client, "alice", &info.id).await;
    let labels: Vec<_> = ex.parts.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(labels, ["Introduction", "Numbers"]);
    let intro = &ex.parts[0].text;
    assert!(intro.starts_with("# Introduction"), "{intro}");
    assert!(
        intro.contains("Confab reads Word documents & keeps structure."),
        "{intro}"
    );
    assert!(intro.contains("## Goals"), "{intro}");
    assert!(intro.contains("- first goal\n- second goal"), "{intro}");
    // Numbered lists keep their numbers (sub-levels restart under each item).
    assert!(
        intro.contains("1. install\n  a) download\n  b) unpack\n2. run\n  a) start it"),
        "{intro}"
    );
    let numbers = &ex.parts[1];
    assert!(
        numbers
            .text
            .contains("| Name | Qty |\n| --- | --- |\n| apples | 3 |"),
        "{}",
        numbers.text
    );
    assert!(
        numbers.text.contains("pears \\| plums"),
        "pipes escaped: {}",
        numbers.text
    );
    assert!(numbers.text.ends_with("After the table."));
    assert_eq!(numbers.tables.len(), 1);
    assert_eq!(numbers.tables[0].header, ["Name", "Qty"]);
    assert_eq!(numbers.tables[0].rows[1].cells, ["pears | plums", "5"]);
    assert!(
        ex.parts
            .iter()
            .all(|p| p.token_count > 0 && p.kind == PartKind::Section as i32)
    );
}

#[tokio::test]
async fn xlsx_sheets_keep_header_numbers_dates_and_formulas() {
    let mut app = spawn_app().await;
    let s = |v: &str| Cell::Str(v.into());
    let book = corpus::xlsx(&[
        (
            "Revenue",
            vec![
                vec![s("Region"), s("Q1"), s("Q2"), s("Closed"), s("Total")],
                vec![
                    s("North"),
                    Cell::Num(10.0),
                    Cell::Num(2.5),
                    Cell::Date(45306.0),
                    Cell::Formula("B2+C2".into(), 12.5),
                ],
                vec![
                    s("South"),
                    Cell::Num(20.0),
                    Cell::Num(4.0),
                    Cell::Date(45337.0),
                    Cell::Formula("B3+C3".into(), 24.0),
                ],
            ],
        ),
        (
            "Costs",
            vec![
                vec![s("Item"), s("Cost")],
                vec![s("Servers"), Cell::Num(1200.0)],
            ],
        ),
    ]);
    let info = upload_ok(&mut app.client, "alice", "book.xlsx", &book).await;
    assert_eq!(info.kind, FileKind::Xlsx as i32);
    assert_eq!(info.part_count, 2);
    let ex = extraction(&mut app.client, "alice", &info.id).await;
    assert_eq!(ex.parts[0].label, "Sheet Revenue");
    assert_eq!(ex.parts[1].label, "Sheet Costs");
    let rev = &ex.parts[0];
    assert_eq!(rev.kind, PartKind::Sheet as i32);
    assert_eq!(
        rev.tables[0].header,
        ["Region", "Q1", "Q2", "Closed", "Total"]
    );
    assert_eq!(
        rev.tables[0].rows[0].cells,
        ["North", "10", "2.5", "2024-01-15", "12.5"]
    );
    assert_eq!(
        rev.tables[0].rows[1].cells,
        ["South", "20", "4", "2024-02-15", "24"]
    );
    assert!(
        rev.text
            .starts_with("| Region | Q1 | Q2 | Closed | Total |\n| --- |"),
        "{}",
        rev.text
    );
    let sheet = rev.sheet.as_ref().unwrap();
    assert_eq!(
        (sheet.total_rows, sheet.total_columns, sheet.rows_included),
        (3, 5, 2)
    );
    assert!(sheet.omitted_note.is_empty());
    assert!(ex.parts[1].text.contains("| Servers | 1200 |"));
}

#[tokio::test]
async fn large_sheets_are_summarised() {
    let mut app = spawn_app().await;
    let mut rows = vec![vec![Cell::Str("id".into()), Cell::Str("value".into())]];
    for i in 0..1000 {
        rows.push(vec![Cell::Num(i as f64), Cell::Str(format!("row {i}"))]);
    }
    let info = upload_ok(
        &mut app.client,
        "alice",
        "big.xlsx",
        &corpus::xlsx(&[("Data", rows)]),
    )
    .await;
    let ex = extraction(&mut app.client, "alice", &info.id).await;
    let part = &ex.parts[0];
    let sheet = part.sheet.as_ref().unwrap();
    assert_eq!(sheet.total_rows, 1001);
    assert_eq!(sheet.rows_included, 200);
    assert_eq!(
        sheet.omitted_note,
        "showing the first 200 of 1000 data rows"
    );
    assert!(part.text.contains("| 199 | row 199 |"));
    assert!(!part.text.contains("row 200 |"));
    assert!(
        part.text.contains("1001 rows × 2 columns in total"),
        "{}",
        part.text
    );
}

#[tokio::test]
async fn csv_reads_like_a_sheet() {
    let mut app = spawn_app().await;
    let csv = b"name,city,score\nAda,London,99\n\"Lovelace, A.\",Paris,98\n";
    let info = upload_ok(&mut app.client, "alice", "people.csv", csv).await;
    assert_eq!(info.kind, FileKind::Csv as i32);
    assert_eq!(info.mime_type, "text/csv");
    let ex = extraction(&mut app.client, "alice", &info.id).await;
    assert_eq!(ex.parts[0].tables[0].header, ["name", "city", "score"]);
    assert_eq!(
        ex.parts[0].tables[0].rows[1].cells,
        ["Lovelace, A.", "Paris", "98"]
    );
    assert!(ex.parts[0].text.contains("| Ada | London | 99 |"));
}

#[tokio::test]
async fn text_formats_are_detected_by_content() {
    let mut app = spawn_app().await;
    let md = upload_ok(
        &mut app.client,
        "alice",
        "README.md",
        b"# Title\n\nSome *markdown*.\n",
    )
    .await;
    assert_eq!(
        (md.kind, md.mime_type.as_str()),
        (FileKind::Text as i32, "text/markdown")
    );
    let json = upload_ok(
        &mut app.client,
        "alice",
        "data.txt",
        br#"{"a":[1,2],"b":"x"}"#,
    )
    .await;
    assert_eq!(json.mime_type, "application/json");
    let ex = extraction(&mut app.client, "alice", &json.id).await;
    assert!(
        ex.parts[0].text.contains("\"a\": ["),
        "pretty-printed: {}",
        ex.parts[0].text
    );
    let code = upload_ok(
        &mut app.client,
        "alice",
        "main.rs",
        b"fn main() {\n    println!(\"hi\");\n}\n",
    )
    .await;
    assert_eq!(code.mime_type, "text/plain");
    let ex = extraction(&mut app.client, "alice", &code.id).await;
    assert_eq!(ex.parts[0].kind, PartKind::Text as i32);
    assert!(ex.parts[0].text.contains("println!"));
}

#[tokio::test]
async fn images_are_validated_with_thumbnails_and_prompt_data_urls() {
    let mut app = spawn_app().await;
    for (format, name) in [
        (image::ImageFormat::Png, "png"),
        (image::ImageFormat::Jpeg, "jpeg"),
        (image::ImageFormat::Gif, "gif"),
        (image::ImageFormat::WebP, "webp"),
    ] {
        let bytes = corpus::image(format, 640, 320);
        // The name lies; the content decides.
        let info = upload_ok(&mut app.client, "alice", "picture.pdf", &bytes).await;
        assert_eq!(info.kind, FileKind::Image as i32, "{name}");
        assert_eq!(info.mime_type, format!("image/{name}"));
        let img = info.image.clone().unwrap();
        assert_eq!(
            (img.width, img.height, img.format.as_str()),
            (640, 320, name)
        );
        assert!(info.has_thumbnail);
        let thumb = app
            .client
            .get_thumbnail(req(
                "alice",
                GetThumbnailRequest {
                    file_id: info.id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((thumb.width, thumb.height), (256, 128), "{name}");
        let decoded = image::load_from_memory(&thumb.data).unwrap();
        assert_eq!(decoded.width(), 256);
        let parts = app
            .client
            .get_prompt_parts(req(
                "alice",
                GetPromptPartsRequest {
                    file_ids: vec![info.id.clone()],
                    include_images: true,
                    max_image_side: 0,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let image = parts.files[0].image.clone().unwrap();
        assert!(image.data_url.starts_with("data:image/"), "{name}");
        assert_eq!((image.width, image.height), (640, 320));
    }
    // Larger than the vision limit: downscaled to 2048 on the longest side.
    let big = corpus::image(image::ImageFormat::Jpeg, 3000, 1000);
    let info = upload_ok(&mut app.client, "alice", "big.jpg", &big).await;
    let parts = app
        .client
        .get_prompt_parts(req(
            "alice",
            GetPromptPartsRequest {
                file_ids: vec![info.id.clone()],
                include_images: true,
                max_image_side: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let image = parts.files[0].image.clone().unwrap();
    assert_eq!((image.width, image.height), (2048, 683));
    assert!(image.data_url.starts_with("data:image/jpeg;base64,"));
    // Without include_images no image is sent; other files have no thumbnail.
    let parts = app
        .client
        .get_prompt_parts(req(
            "alice",
            GetPromptPartsRequest {
                file_ids: vec![info.id],
                include_images: false,
                max_image_side: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(parts.files[0].image.is_none());
    let text = upload_ok(&mut app.client, "alice", "a.txt", b"hello").await;
    assert_code(
        app.client
            .get_thumbnail(req("alice", GetThumbnailRequest { file_id: text.id }))
            .await,
        Code::NotFound,
        "thumbnail",
    );
}

#[tokio::test]
async fn prompt_parts_carry_labels_text_and_tokens() {
    let mut app = spawn_app().await;
    let pdf = corpus::pdf(&[lines(1, 3), lines(2, 3)]);
    let a = upload_ok(&mut app.client, "alice", "a.pdf", &pdf).await;
    let b = upload_ok(&mut app.client, "alice", "b.csv", b"x,y\n1,2\n").await;
    let resp = app
        .client
        .get_prompt_parts(req(
            "alice",
            GetPromptPartsRequest {
                file_ids: vec![a.id.clone(), b.id.clone()],
                include_images: true,
                max_image_side: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.files.len(), 2);
    assert_eq!(resp.files[0].file.as_ref().unwrap().id, a.id);
    let labels: Vec<_> = resp.files[0]
        .text_parts
        .iter()
        .map(|p| p.label.as_str())
        .collect();
    assert_eq!(labels, ["Page 1", "Page 2"]);
    assert!(resp.files[0].text_parts.iter().all(|p| p.token_count > 0));
    assert!(resp.files[1].text_parts[0].text.contains("| 1 | 2 |"));
    assert!(resp.files[0].image.is_none());
    // Another user's id fails the whole call.
    assert_code(
        app.client
            .get_prompt_parts(req(
                "bob",
                GetPromptPartsRequest {
                    file_ids: vec![a.id],
                    include_images: false,
                    max_image_side: 0,
                },
            ))
            .await,
        Code::NotFound,
        "file",
    );
}
