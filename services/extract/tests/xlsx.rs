//! The XLSX reader against calamine (a well-kept reader, used here only as a reference):
//! the same cells, in the same order, showing the same text — on the generated corpus and
//! on a workbook written the way Excel writes one (shared rich strings with phonetic
//! guides, custom date formats, booleans, errors, string formulas, escapes, cells without
//! references, a chart sheet).

use std::io::Cursor;
use std::time::Duration;

use calamine::{Data, Reader, Xlsx};
use confab_extract::corpus::{self, Cell};
use confab_extract::detect::Detected;
use confab_extract::extract::{Limits, extract};

/// Non-empty cells of each sheet, row-major, as calamine shows them.
fn reference(book: &[u8]) -> Vec<(String, Vec<String>)> {
    let mut wb: Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(book)).unwrap();
    let mut out = vec![];
    for name in wb.sheet_names() {
        let Ok(range) = wb.worksheet_range(&name) else {
            continue;
        };
        let cells = range
            .used_cells()
            .map(|(_, _, v)| shown(v))
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().to_owned())
            .collect();
        out.push((format!("Sheet {name}"), cells));
    }
    out
}

fn shown(v: &Data) -> String {
    match v {
        Data::Empty => String::new(),
        Data::String(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => (*f as i64).to_string(),
        Data::Float(f) => f.to_string(),
        Data::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        Data::DateTime(dt) => match dt.as_datetime() {
            Some(t) if !dt.is_duration() => {
                let s = t.to_string();
                s.strip_suffix(" 00:00:00").map(str::to_owned).unwrap_or(s)
            }
            _ => dt.as_f64().to_string(),
        },
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Error(e) => e.to_string(),
    }
}

/// Non-empty cells of each sheet part, row-major, as Confab extracted them.
fn ours(book: &[u8]) -> Vec<(String, Vec<String>)> {
    let mut limits = Limits::new(Duration::from_secs(20));
    limits.max_sheet_rows = usize::MAX;
    let ex = extract(Detected::Xlsx, book, &limits).unwrap();
    ex.parts
        .iter()
        .map(|p| {
            let cells = p
                .tables
                .iter()
                .flat_map(|t| {
                    std::iter::once(&t.header)
                        .chain(t.rows.iter().map(|r| &r.cells))
                        .flatten()
                })
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().to_owned())
                .collect();
            (p.label.clone(), cells)
        })
        .collect()
}

#[test]
fn generated_corpus_reads_like_calamine() {
    let mut rows = vec![vec![
        Cell::Str("Region".into()),
        Cell::Inline("Units & price".into()),
        Cell::Str("When".into()),
        Cell::Str("Total".into()),
    ]];
    for r in 0..300u64 {
        rows.push(vec![
            Cell::Str(corpus::words(r, 2)),
            Cell::Num((r * 37 % 1000) as f64 / 8.0),
            Cell::Date(44_000.0 + r as f64 * 1.25),
            if r % 7 == 0 {
                Cell::Empty
            } else {
                Cell::Formula(format!("B{}*2", r + 2), (r * 37 % 1000) as f64 / 4.0)
            },
        ]);
    }
    let book = corpus::xlsx(&[
        ("Data", rows),
        ("R&D <2>", vec![vec![Cell::Str("only".into())]]),
    ]);
    let (a, b) = (ours(&book), reference(&book));
    assert_eq!(a.len(), 2);
    assert_eq!(a[1].0, "Sheet R&D <2>");
    assert_eq!(a, b);
}

const NS: &str = r#"xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships""#;

/// A workbook written part by part, the way Excel lays one out.
fn excel_like() -> Vec<u8> {
    let workbook = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook {NS}><workbookPr/><bookViews><workbookView/></bookViews><sheets><sheet name="Plan" sheetId="1" r:id="rId1"/><sheet name="Chart1" sheetId="3" r:id="rId3"/><sheet name="Q&amp;A" sheetId="2" r:id="rId2"/></sheets><definedNames><definedName name="x">Plan!$A$1</definedName></definedNames></workbook>"#
    );
    let rels = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/chartsheet" Target="chartsheets/sheet1.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="/xl/worksheets/sheet2.xml"/><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId5" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/><Relationship Id="rId4" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/></Relationships>"#;
    let sst = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<sst {NS} count="6" uniqueCount="6"><si><t>Task</t></si><si><r><rPr><b/></rPr><t>Due</t></r><r><t xml:space="preserve"> date</t></r></si><si><t>東京</t><rPh sb="0" eb="2"><t>トウキョウ</t></rPh></si><si><t>line one_x000D_
line two</t></si><si/><si><t>Fish &amp; chips &lt;3 &#x263A;</t></si></sst>"#
    );
    let styles = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<styleSheet {NS}><numFmts count="3"><numFmt numFmtId="164" formatCode="yyyy\-mm\-dd\ hh:mm"/><numFmt numFmtId="165" formatCode="&quot;Week &quot;0"/><numFmt numFmtId="166" formatCode="[h]:mm:ss"/></numFmts><fonts count="1"><font/></fonts><cellStyleXfs count="1"><xf numFmtId="0"/></cellStyleXfs><cellXfs count="5"><xf numFmtId="0" xfId="0"/><xf numFmtId="164" xfId="0" applyNumberFormat="1"/><xf numFmtId="165" xfId="0" applyNumberFormat="1"/><xf numFmtId="14" xfId="0" applyNumberFormat="1"/><xf numFmtId="10" xfId="0" applyNumberFormat="1"/></cellXfs></styleSheet>"#
    );
    let plan = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet {NS}><dimension ref="A1:E6"/><sheetViews><sheetView workbookViewId="0"/></sheetViews><sheetData><row r="1" spans="1:5"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="C1" t="inlineStr"><is><r><t>Or</t></r><r><t>der</t></r></is></c><c r="D1" t="s" s="0"><v>4</v></c><c r="E1" t="s"><v>5</v></c></row><row r="2"><c r="A2" t="s"><v>2</v></c><c r="B2" s="1"><v>45306.5625</v></c><c r="C2" s="2"><v>3</v></c><c r="D2" t="b"><v>1</v></c><c r="E2" s="4"><v>0.125</v></c></row><row r="4"><c r="A4" t="s"><v>3</v></c><c r="B4" s="3"><v>45337</v></c><c r="C4" t="e"><f>1/0</f><v>#DIV/0!</v></c><c r="D4" t="str"><f>A1&amp;"!"</f><v>Task!</v></c><c r="E4" t="b"><v>0</v></c></row><row><c><v>7</v></c><c t="s"><v>0</v></c></row><row r="6"><c r="A6" s="1"/><c r="C6"><v>-2.5E-3</v></c></row></sheetData><mergeCells count="1"><mergeCell ref="A1:B1"/></mergeCells><pageMargins left="0.7"/></worksheet>"#
    );
    let qa = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet {NS}><sheetData><row r="1"><c r="A1" t="s"><v>5</v></c></row></sheetData></worksheet>"#
    );
    let root_rels = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#;
    let types = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/></Types>"#;
    corpus::zip(&[
        ("[Content_Types].xml", types.as_bytes().to_vec()),
        ("_rels/.rels", root_rels.as_bytes().to_vec()),
        ("xl/workbook.xml", workbook.into_bytes()),
        ("xl/_rels/workbook.xml.rels", rels.as_bytes().to_vec()),
        ("xl/sharedStrings.xml", sst.into_bytes()),
        ("xl/styles.xml", styles.into_bytes()),
        ("xl/worksheets/sheet1.xml", plan.into_bytes()),
        ("xl/worksheets/sheet2.xml", qa.into_bytes()),
        (
            "xl/chartsheets/sheet1.xml",
            format!("<chartsheet {NS}/>").into_bytes(),
        ),
    ])
}

#[test]
fn an_excel_written_workbook_reads_like_calamine() {
    let book = excel_like();
    let a = ours(&book);
    assert_eq!(
        a,
        reference(&book)
            .into_iter()
            .filter(|(name, _)| name != "Sheet Chart1")
            .collect::<Vec<_>>()
    );
    // And what those cells are, spelled out.
    assert_eq!(
        a[0].1,
        [
            "Task",
            "Due date",
            "Order",
            "Fish & chips <3 ☺",
            "東京",
            "2024-01-15 13:30:00",
            "3",
            "TRUE",
            "0.125",
            "line one\r\nline two",
            "2024-02-15",
            "#DIV/0!",
            "Task!",
            "FALSE",
            "7",
            "Task",
            "-0.0025",
        ]
    );
    assert_eq!(
        a[1],
        ("Sheet Q&A".to_owned(), vec!["Fish & chips <3 ☺".to_owned()])
    );
    let mut limits = Limits::new(Duration::from_secs(20));
    limits.max_sheet_rows = 100;
    let ex = extract(Detected::Xlsx, &book, &limits).unwrap();
    assert!(
        ex.warnings.iter().any(|w| w.contains("Chart1")),
        "{:?}",
        ex.warnings
    );
    // Rows keep their place: row 3 is empty, so the table has rows 1, 2, 4, 5, 6.
    let plan = &ex.parts[0];
    assert_eq!(plan.sheet.as_ref().unwrap().total_rows, 5);
}

#[test]
fn malformed_sheets_are_clear_errors() {
    let limits = Limits::new(Duration::from_secs(5));
    let bad = |sheet: &str| {
        let book = corpus::xlsx(&[("S", vec![vec![Cell::Num(1.0)]])]);
        let book = corpus::with_entry(&book, "xl/worksheets/sheet1.xml", sheet.as_bytes());
        extract(Detected::Xlsx, &book, &limits)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = bad("<worksheet><sheetData><row><c><v>1</x></c></row></sheetData></worksheet>");
    assert!(e.contains("corrupt") && e.contains("sheet \"S\""), "{e}");
}
