use std::path::Path;
use std::process::ExitCode;

use restorefs_parsers::tree::{RestoreTree, VolumeState};
use restorefs_parsers::volume::{self, Scheme};
use serde_json::{json, Value};

use restorefs_parsers::image::{self, ChainLayer};

use super::{open, warn_failed_links, CliError, CliResult, OpenSpec};
use crate::format::human_bytes;

/// `restorefs info IMAGE [--json] [--all-points]`.
///
/// With `--all-points`, the chain and then each restore point (oldest
/// first) as `info` of that point alone would show it.
pub fn run(image: &Path, json: bool, spec: &OpenSpec) -> CliResult {
    if !spec.all_points {
        let tree = open(image, spec)?;
        let v = describe(image, &tree);
        if json {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            print_text(&v);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let img = image::open_with(image, &spec.chain).map_err(|e| CliError::at(image, e))?;
    warn_failed_links(&img.chain);
    let chain = chain_json(&img.chain);
    let mut points = Vec::new();
    for (k, point) in img.into_points().into_iter().enumerate() {
        let file = point.chain.first().map(|l| l.file.clone());
        let file = file.as_deref().unwrap_or(image);
        let tree = RestoreTree::from_image(point).map_err(|e| CliError::at(file, e))?;
        let mut v = describe(file, &tree);
        let stem = file
            .file_stem()
            .map_or_else(|| "point".into(), |s| s.to_string_lossy().into_owned());
        v["point"] = json!(format!("@{}-{stem}", k + 1));
        points.push(v);
    }
    if json {
        let v = json!({ "image": image.display().to_string(), "chain": chain, "points": points });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print_chain(&chain);
        for v in &points {
            println!();
            println!("== {} ==", v["point"].as_str().unwrap_or(""));
            print_text(v);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn chain_json(chain: &[ChainLayer]) -> Value {
    json!(chain
        .iter()
        .map(|l| json!({
            "file": l.file.display().to_string(),
            "format": l.format,
            "link": l.link,
            "parent": l.parent.as_ref().map(|p| p.display().to_string()),
            "check": l.check,
        }))
        .collect::<Vec<_>>())
}

/// The chain, newest first: each file, its format, its link and check.
fn print_chain(chain: &Value) {
    let layers = chain.as_array().map_or(&[][..], |a| a.as_slice());
    if layers.len() < 2 {
        return;
    }
    for (i, l) in layers.iter().enumerate() {
        println!(
            "{:<11} {} ({})",
            if i == 0 { "chain:" } else { "" },
            l["file"].as_str().unwrap_or(""),
            l["format"].as_str().unwrap_or("")
        );
        if let Some(link) = l["link"].as_str() {
            println!(
                "              parent link {link} -> {}: {}",
                l["parent"].as_str().unwrap_or("?"),
                l["check"].as_str().unwrap_or("")
            );
        }
    }
}

fn describe(image: &Path, tree: &RestoreTree) -> Value {
    let img = &tree.image;
    let mut table = json!({
        "scheme": tree.table.scheme.name(),
        "sector_size": tree.table.sector_size,
        "notes": tree.table.notes,
    });
    if let Scheme::Gpt {
        disk_guid,
        from_backup,
    } = &tree.table.scheme
    {
        table["disk_guid"] = json!(disk_guid);
        table["from_backup"] = json!(from_backup);
    }
    let volumes: Vec<Value> = tree
        .volumes
        .iter()
        .map(|v| {
            let mut o = json!({ "name": v.name, "size": v.size() });
            if let Some(p) = &v.partition {
                // An LV has neither: its extents may lie anywhere on its PVs.
                let lv = p.type_id == "lvm2-lv";
                o["number"] = if lv { Value::Null } else { json!(p.number) };
                o["offset"] = if lv { Value::Null } else { json!(p.offset) };
                o["type"] = json!(p.type_id);
                o["type_name"] = json!(volume::type_name(&p.type_id));
                if let Some(g) = &p.part_guid {
                    o["partition_guid"] = json!(g);
                }
                if let Some(l) = &p.part_label {
                    o["partition_label"] = json!(l);
                }
            }
            match &v.state {
                VolumeState::Fs(_, fs) => {
                    let i = fs.info();
                    o["filesystem"] = json!(i.kind);
                    o["label"] = json!(i.label);
                    o["uuid"] = json!(i.uuid);
                    o["block_size"] = json!(i.block_size);
                    o["total_bytes"] = json!(i.total_bytes);
                    o["free_bytes"] = json!(i.free_bytes);
                    o["used_bytes"] = json!(i.total_bytes.saturating_sub(i.free_bytes));
                    o["warnings"] = json!(i.warnings);
                    o["path"] = json!(if tree.bare {
                        "/".to_string()
                    } else {
                        format!("/{}", v.name)
                    });
                }
                VolumeState::Failed(kind, err) => {
                    o["filesystem"] = json!(format!("{kind:?}").to_lowercase());
                    o["error"] = json!(err);
                    o["path"] = json!(format!("/{}.img", v.name));
                }
                VolumeState::Unknown if v.is_container() => {
                    o["filesystem"] = json!("extended");
                    o["path"] = Value::Null;
                }
                VolumeState::Unknown => {
                    o["filesystem"] = Value::Null;
                    o["path"] = json!(format!("/{}.img", v.name));
                }
            }
            o
        })
        .collect();
    json!({
        "image": image.display().to_string(),
        "format": img.format,
        "virtual_size": img.disk.size(),
        "file_bytes": img.file_bytes,
        "details": img.details.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, Value>>(),
        "notes": img.notes,
        "chain": chain_json(&img.chain),
        "partition_table": table,
        "volumes": volumes,
    })
}

fn print_text(v: &Value) {
    let num = |x: &Value| x.as_u64().unwrap_or(0);
    println!("image:      {}", v["image"].as_str().unwrap_or(""));
    println!(
        "format:     {} ({}, {} on disk)",
        v["format"].as_str().unwrap_or(""),
        human_bytes(num(&v["virtual_size"])),
        human_bytes(num(&v["file_bytes"]))
    );
    for (k, val) in v["details"].as_object().into_iter().flatten() {
        println!("{:<11} {}", format!("{k}:"), val.as_str().unwrap_or(""));
    }
    for n in v["notes"].as_array().into_iter().flatten() {
        println!("note:       {}", n.as_str().unwrap_or(""));
    }
    print_chain(&v["chain"]);
    let t = &v["partition_table"];
    let mut scheme = t["scheme"].as_str().unwrap_or("").to_string();
    if let Some(g) = t["disk_guid"].as_str() {
        scheme.push_str(&format!(" (disk {g})"));
    }
    if t["from_backup"].as_bool() == Some(true) {
        scheme.push_str(" [primary header damaged: read from the backup header]");
    }
    println!("table:      {scheme}");
    for n in t["notes"].as_array().into_iter().flatten() {
        println!("warning:    {}", n.as_str().unwrap_or(""));
    }
    println!();
    let mut rows = vec![[
        "VOLUME", "OFFSET", "SIZE", "TYPE", "FS", "LABEL", "USED", "FREE",
    ]
    .map(String::from)];
    let mut extra: Vec<Vec<String>> = vec![Vec::new()];
    for vol in v["volumes"].as_array().into_iter().flatten() {
        let text = |x: &Value| x.as_str().unwrap_or("-").to_string();
        let (used, free) = if vol.get("total_bytes").is_some() {
            (
                human_bytes(num(&vol["used_bytes"])),
                human_bytes(num(&vol["free_bytes"])),
            )
        } else {
            ("-".into(), "-".into())
        };
        let path = vol["path"].as_str().or(vol["name"].as_str()).unwrap_or("");
        rows.push([
            path.to_string(),
            vol["offset"].as_u64().map_or("-".into(), |o| o.to_string()),
            human_bytes(num(&vol["size"])),
            vol["type_name"]
                .as_str()
                .map_or_else(|| text(&vol["type"]), String::from),
            text(&vol["filesystem"]),
            text(&vol["label"]),
            used,
            free,
        ]);
        let mut lines = Vec::new();
        if let Some(e) = vol["error"].as_str() {
            lines.push(format!("error: {e}"));
        }
        for w in vol["warnings"].as_array().into_iter().flatten() {
            lines.push(format!("warning: {}", w.as_str().unwrap_or("")));
        }
        extra.push(lines);
    }
    // Columns as wide as their widest cell; numbers right-aligned.
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for (row, lines) in rows.iter().zip(&extra) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| {
                if matches!(c, 1 | 2 | 6 | 7) {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        println!("{}", cells.join("  ").trim_end());
        for l in lines {
            println!("    {l}");
        }
    }
}
