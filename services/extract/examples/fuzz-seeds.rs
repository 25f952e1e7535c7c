//! Writes small valid files of every extracted kind as seed corpora for the fuzz targets
//! (`fuzz/run.sh` calls it): `fuzz-seeds <corpus dir>` → `<dir>/<target>/seed-*`.

use std::path::Path;

use confab_extract::corpus::{self, Cell, DocBlock};

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: fuzz-seeds <corpus dir>");
    let dir = Path::new(&dir);
    let pages = vec![
        vec!["Page one".to_owned(), corpus::words(1, 6)],
        vec![corpus::words(2, 4)],
    ];
    let blocks = [
        DocBlock::Heading(1, "Title".into()),
        DocBlock::Para(corpus::words(3, 8)),
        DocBlock::Bullet("first".into()),
        DocBlock::Bullet("second".into()),
        DocBlock::Table(vec![
            vec!["a".into(), "b".into()],
            vec!["1".into(), "x | y".into()],
        ]),
    ];
    let sheet = vec![
        vec![
            Cell::Str("Name".into()),
            Cell::Str("Units".into()),
            Cell::Str("When".into()),
        ],
        vec![
            Cell::Str("north".into()),
            Cell::Num(2.5),
            Cell::Date(45000.0),
            Cell::Formula("B2*2".into(), 5.0),
        ],
        vec![Cell::Empty, Cell::Num(-1.0)],
    ];
    let images = [
        ("png", image::ImageFormat::Png),
        ("jpeg", image::ImageFormat::Jpeg),
        ("webp", image::ImageFormat::WebP),
        ("gif", image::ImageFormat::Gif),
    ];
    let mut seeds: Vec<(&str, String, Vec<u8>)> = vec![
        ("pdf", "seed-1.pdf".into(), corpus::pdf(&pages)),
        ("docx", "seed-1.docx".into(), corpus::docx(&blocks)),
        (
            "xlsx",
            "seed-1.xlsx".into(),
            corpus::xlsx(&[("One", sheet.clone()), ("Two", sheet)]),
        ),
        (
            "detect_text",
            "seed-1.csv".into(),
            b"a,b\n1,\"x, y\"\n".to_vec(),
        ),
        (
            "detect_text",
            "seed-2.md".into(),
            b"# Title\n\n- item\n".to_vec(),
        ),
        (
            "detect_text",
            "seed-3.json".into(),
            br#"{"a":[1,2,{"b":null}]}"#.to_vec(),
        ),
    ];
    for (name, format) in images {
        seeds.push(("image", format!("seed-{name}"), corpus::image(format, 9, 7)));
    }
    for (target, file, bytes) in seeds {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).expect("create corpus dir");
        std::fs::write(d.join(file), bytes).expect("write seed");
    }
}
