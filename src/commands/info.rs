//! `restorefs info`: the image, its chain, its table and every volume, as
//! text or as one JSON object whose schema is the same for every format
//! (README, "info --json").

use std::path::Path;
use std::process::ExitCode;

use restorefs_parsers::image::{ChainLayer, ImageReport};
use restorefs_parsers::tree::{RestoreTree, TreeVolume, VolumeState};
use restorefs_parsers::volume::{self, Scheme, Table, VolumeKind};
use serde_json::{json, Map, Value};

use super::{open, CliResult, OpenSpec};
use crate::format::{human_bytes, write_out};

/// `restorefs info IMAGE [--json] [--all-points]`.
///
/// With `--all-points`, the chain and then each restore point (oldest
/// first) as `info` of that point alone would show it.
pub fn run(image: &Path, json: bool, spec: &OpenSpec) -> CliResult {
    let tree = open(image, spec)?;
    let name = restorefs_parsers::image::display_name(image);
    let v = if tree.points.is_empty() {
        let volumes: Vec<usize> = (0..tree.volumes.len()).collect();
        let report = tree.image.report();
        describe(
            &name,
            &report,
            &tree.image.chain,
            &tree.table,
            &tree,
            &volumes,
        )
    } else {
        let points: Vec<Value> = tree
            .points
            .iter()
            .map(|p| {
                let volumes: Vec<usize> = (p.first..p.first + p.count).collect();
                let file = restorefs_parsers::image::display_name(&p.file);
                let mut v = describe(&file, &p.report, &p.chain, &p.table, &tree, &volumes);
                v["point"] = json!(p.name);
                v["point_kind"] = json!(p.kind.name());
                v["point_time"] = json!(p.time.map(|t| t.secs));
                v
            })
            .collect();
        json!({ "image": name, "chain": chain_json(&tree.image.chain), "points": points })
    };
    let text = if json {
        format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
    } else if tree.points.is_empty() {
        text(&v)
    } else {
        let mut out = chain_text(&v["chain"]);
        for p in v["points"].as_array().into_iter().flatten() {
            out.push_str(&format!("\n== {} ==\n", p["point"].as_str().unwrap_or("")));
            out.push_str(&text(p));
        }
        out
    };
    write_out(text.as_bytes())?;
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
            "check": l.check.to_string(),
            "check_status": l.check.status(),
        }))
        .collect::<Vec<_>>())
}

/// The chain, newest first: each file, its format, its link and check.
fn chain_text(chain: &Value) -> String {
    let mut out = String::new();
    let layers = chain.as_array().map_or(&[][..], |a| a.as_slice());
    if layers.len() < 2 {
        return out;
    }
    for (i, l) in layers.iter().enumerate() {
        out.push_str(&format!(
            "{:<11} {} ({})\n",
            if i == 0 { "chain:" } else { "" },
            l["file"].as_str().unwrap_or(""),
            l["format"].as_str().unwrap_or("")
        ));
        if let Some(link) = l["link"].as_str() {
            out.push_str(&format!(
                "              parent link {link} -> {}: {}\n",
                l["parent"].as_str().unwrap_or("?"),
                l["check"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

/// The image report's fields: the same keys for every format.
fn report_json(r: &ImageReport) -> Map<String, Value> {
    let f = &r.facts;
    let mut o = Map::new();
    o.insert("format".into(), json!(r.format));
    o.insert("subformat".into(), json!(f.subformat));
    o.insert("virtual_size".into(), json!(r.virtual_size));
    o.insert("file_bytes".into(), json!(r.file_bytes));
    o.insert("allocated_bytes".into(), json!(f.allocated_bytes));
    o.insert("block_size".into(), json!(f.block_size));
    o.insert("cache_budget".into(), json!(f.cache_budget));
    let numbers: Map<String, Value> = f
        .numbers
        .iter()
        .map(|(k, v)| ((*k).into(), json!(v)))
        .collect();
    let labels: Map<String, Value> = f
        .labels
        .iter()
        .map(|(k, v)| ((*k).into(), json!(v)))
        .collect();
    o.insert("numbers".into(), Value::Object(numbers));
    o.insert("labels".into(), Value::Object(labels));
    o.insert("notes".into(), json!(r.notes));
    o
}

fn table_json(t: &Table) -> Value {
    let mut table = json!({
        "scheme": t.scheme.name(),
        "sector_size": t.sector_size,
        "notes": t.notes,
        "disk_guid": null,
        "from_backup": false,
    });
    if let Scheme::Gpt {
        disk_guid,
        from_backup,
    } = &t.scheme
    {
        table["disk_guid"] = json!(disk_guid);
        table["from_backup"] = json!(from_backup);
    }
    table
}

fn describe(
    image: &str,
    report: &ImageReport,
    chain: &[ChainLayer],
    table: &Table,
    tree: &RestoreTree,
    volumes: &[usize],
) -> Value {
    let mut o = Map::new();
    o.insert("image".into(), json!(image));
    o.extend(report_json(report));
    o.insert("chain".into(), chain_json(chain));
    o.insert("partition_table".into(), table_json(table));
    let vols: Vec<Value> = volumes
        .iter()
        .filter_map(|&i| tree.volumes.get(i).map(|v| volume_json(tree, i, v)))
        .collect();
    o.insert("volumes".into(), json!(vols));
    Value::Object(o)
}

fn volume_json(tree: &RestoreTree, i: usize, v: &TreeVolume) -> Value {
    let path = format!("/{}", tree.volume_path(i).join("/"));
    let kind = match v.partition.as_ref().map(|p| p.kind) {
        None => "disk",
        Some(VolumeKind::Partition) => "partition",
        Some(VolumeKind::Extended) => "extended",
        Some(VolumeKind::LogicalVolume) => "logical_volume",
    };
    let mut o = json!({
        "name": v.name,
        "kind": kind,
        "size": v.size(),
        "number": null,
        "offset": null,
        "type": null,
        "type_name": null,
        "partition_guid": null,
        "partition_label": null,
        "state": "unknown",
        "filesystem": null,
        "label": null,
        "uuid": null,
        "block_size": null,
        "total_bytes": null,
        "free_bytes": null,
        "used_bytes": null,
        "warnings": [],
        "subvolumes": [],
        "error": null,
        "path": format!("{path}.img"),
    });
    if let Some(p) = &v.partition {
        // An LV has neither: its extents may lie anywhere on its PVs.
        if p.kind != VolumeKind::LogicalVolume {
            o["number"] = json!(p.number);
            o["offset"] = json!(p.offset);
        }
        o["type"] = json!(p.type_id);
        o["type_name"] = json!(volume::type_name(&p.type_id));
        o["partition_guid"] = json!(p.part_guid);
        o["partition_label"] = json!(p.part_label);
    }
    match &v.state {
        VolumeState::Fs(_, fs) => {
            let i = fs.info();
            o["state"] = json!("filesystem");
            o["filesystem"] = json!(i.kind);
            o["label"] = json!(i.label);
            o["uuid"] = json!(i.uuid);
            o["block_size"] = json!(i.block_size);
            o["total_bytes"] = json!(i.total_bytes);
            o["free_bytes"] = json!(i.free_bytes);
            o["used_bytes"] = json!(i.total_bytes.saturating_sub(i.free_bytes));
            let mut warnings = i.warnings;
            match fs.subvolumes() {
                Ok(s) => {
                    o["subvolumes"] = s
                        .iter()
                        .map(|s| {
                            json!({
                                "id": s.id,
                                "path": s.path.as_ref().map(|p| p.to_string_lossy()),
                                "generation": s.generation,
                                "read_only": s.read_only,
                                "default": s.default,
                                "uuid": s.uuid,
                            })
                        })
                        .collect()
                }
                Err(e) => warnings.push(format!("subvolumes not listed: {e}")),
            }
            o["warnings"] = json!(warnings);
            o["path"] = json!(path);
        }
        VolumeState::Failed(kind, err) => {
            o["state"] = json!("failed");
            o["filesystem"] = json!(kind.name());
            o["error"] = json!(err);
        }
        VolumeState::LvmPv => {
            o["state"] = json!("lvm_pv");
        }
        VolumeState::Unknown if v.is_container() => {
            o["state"] = json!("extended");
            o["filesystem"] = json!("extended");
            o["path"] = Value::Null;
        }
        VolumeState::Unknown => {}
    }
    o
}

fn text(v: &Value) -> String {
    let mut out = String::new();
    let num = |x: &Value| x.as_u64().unwrap_or(0);
    out.push_str(&format!(
        "image:      {}\n",
        v["image"].as_str().unwrap_or("")
    ));
    let sub = v["subformat"]
        .as_str()
        .map_or_else(String::new, |s| format!(" {s}"));
    out.push_str(&format!(
        "format:     {}{sub} ({}, {} on disk)\n",
        v["format"].as_str().unwrap_or(""),
        human_bytes(num(&v["virtual_size"])),
        human_bytes(num(&v["file_bytes"]))
    ));
    for (key, label) in [
        ("allocated_bytes", "allocated:"),
        ("block_size", "block:"),
        ("cache_budget", "cache:"),
    ] {
        if let Some(n) = v[key].as_u64() {
            out.push_str(&format!("{label:<11} {} ({n} bytes)\n", human_bytes(n)));
        }
    }
    for (k, val) in v["numbers"].as_object().into_iter().flatten() {
        out.push_str(&format!("{:<11} {}\n", format!("{k}:"), val));
    }
    for (k, val) in v["labels"].as_object().into_iter().flatten() {
        out.push_str(&format!(
            "{:<11} {}\n",
            format!("{k}:"),
            val.as_str().unwrap_or("")
        ));
    }
    for n in v["notes"].as_array().into_iter().flatten() {
        out.push_str(&format!("note:       {}\n", n.as_str().unwrap_or("")));
    }
    out.push_str(&chain_text(&v["chain"]));
    let t = &v["partition_table"];
    let mut scheme = t["scheme"].as_str().unwrap_or("").to_string();
    if let Some(g) = t["disk_guid"].as_str() {
        scheme.push_str(&format!(" (disk {g})"));
    }
    if t["from_backup"].as_bool() == Some(true) {
        scheme.push_str(" [primary header damaged: read from the backup header]");
    }
    out.push_str(&format!("table:      {scheme}\n"));
    for n in t["notes"].as_array().into_iter().flatten() {
        out.push_str(&format!("warning:    {}\n", n.as_str().unwrap_or("")));
    }
    out.push('\n');
    let mut rows = vec![[
        "VOLUME", "OFFSET", "SIZE", "TYPE", "FS", "LABEL", "USED", "FREE",
    ]
    .map(String::from)];
    let mut extra: Vec<Vec<String>> = vec![Vec::new()];
    for vol in v["volumes"].as_array().into_iter().flatten() {
        let text = |x: &Value| x.as_str().unwrap_or("-").to_string();
        let (used, free) = if vol["total_bytes"].is_u64() {
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
        for s in vol["subvolumes"].as_array().into_iter().flatten() {
            let flag = |k: &str, t: &'static str| if s[k].as_bool() == Some(true) { t } else { "" };
            lines.push(format!(
                "subvolume {} gen {} {}{}{}",
                num(&s["id"]),
                num(&s["generation"]),
                s["path"].as_str().unwrap_or("(unlinked)"),
                flag("read_only", " [read-only]"),
                flag("default", " [default]"),
            ));
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
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        for l in lines {
            out.push_str(&format!("    {l}\n"));
        }
    }
    out
}
