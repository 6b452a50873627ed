//! Operations of log records gathered into transactions, as
//! `xlog_recover_process_data` does: regions split over records are
//! joined, and only transactions whose commit operation is in the log
//! come out, in commit order.

use std::collections::HashMap;

use super::records::Record;
use crate::bytes::{be32, le16, le32};
use crate::{Error, Result};

const START: u8 = 0x01;
const COMMIT: u8 = 0x02;
const CONTINUE: u8 = 0x04;
const WAS_CONT: u8 = 0x08;
const END: u8 = 0x10;
const UNMOUNT: u8 = 0x20;
const CLIENT_TRANSACTION: u8 = 0x69;
const CLIENT_LOG: u8 = 0xaa;
const TRANS_MAGIC: u32 = 0x5452_414e;
const TRANS_HEADER: usize = 16;
/// `XLOG_MAX_REGIONS_IN_ITEM`.
const MAX_REGIONS: u16 = (65536 / 128 / 2 + 1) as u16;
/// Bytes held for open and committed transactions: beyond this the log is
/// not replayed (the largest log is 2 GiB; its live part is usually far
/// smaller).
const MAX_BYTES: usize = 1 << 30;

/// One logged item: its format region first, then its data regions.
#[derive(Debug, Default)]
pub struct Item {
    pub regions: Vec<Vec<u8>>,
    /// Regions the format says it has.
    pub total: usize,
}

impl Item {
    /// `XFS_LI_*` of the item.
    pub fn kind(&self) -> u16 {
        self.regions.first().map_or(0, |r| le16(r, 0))
    }
}

/// A committed transaction.
#[derive(Debug)]
pub struct Trans {
    /// LSN of the record it started in.
    pub lsn: u64,
    pub items: Vec<Item>,
}

struct Open {
    lsn: u64,
    /// Empty until the transaction header is whole, as the kernel's
    /// item queue.
    items: Vec<Item>,
}

/// Gathers transactions from records in log order.
#[derive(Default)]
pub struct Builder {
    open: HashMap<u32, Open>,
    pub committed: Vec<Trans>,
    bytes: usize,
}

fn corrupt(what: impl Into<String>) -> Error {
    Error::corrupt("xfs", 0, format!("log: {}", what.into()))
}

impl Builder {
    pub fn record(&mut self, rec: Record) -> Result<()> {
        let data = &rec.data;
        let mut at = 0usize;
        let mut ops = rec.num_ops;
        while at < data.len() && ops > 0 {
            let hdr = data
                .get(at..at + 12)
                .ok_or_else(|| corrupt("operation header past the record"))?;
            let tid = be32(hdr, 0);
            let len = be32(hdr, 4) as usize;
            let client = hdr.get(8).copied().unwrap_or(0);
            let flags = hdr.get(9).copied().unwrap_or(0);
            at += 12;
            if client != CLIENT_TRANSACTION && client != CLIENT_LOG {
                return Err(corrupt(format!("operation of unknown client {client:#x}")));
            }
            let body = data
                .get(at..at.saturating_add(len))
                .ok_or_else(|| corrupt("operation longer than its record"))?;
            self.op(rec.lsn, tid, flags, body)?;
            at += len;
            ops -= 1;
        }
        Ok(())
    }

    fn op(&mut self, lsn: u64, tid: u32, flags: u8, body: &[u8]) -> Result<()> {
        let Some(t) = self.open.get_mut(&tid) else {
            // Slack before a transaction starts is skipped.
            if flags & START != 0 {
                self.open.insert(
                    tid,
                    Open {
                        lsn,
                        items: Vec::new(),
                    },
                );
            }
            return Ok(());
        };
        let mut flags = flags & !END;
        if flags & WAS_CONT != 0 {
            flags &= !CONTINUE;
        }
        let r = match flags {
            0 | CONTINUE => add(t, body, &mut self.bytes),
            WAS_CONT => add_cont(t, body, &mut self.bytes),
            COMMIT => {
                if let Some(t) = self.open.remove(&tid) {
                    self.committed.push(Trans {
                        lsn: t.lsn,
                        items: t.items,
                    });
                }
                Ok(())
            }
            UNMOUNT => {
                self.open.remove(&tid);
                Ok(())
            }
            _ => Err(corrupt(format!("bad operation flags {flags:#x}"))),
        };
        if self.bytes > MAX_BYTES {
            return Err(corrupt("too much of the log to hold"));
        }
        r
    }
}

/// `xlog_recover_add_to_trans`: a new region.
fn add(t: &mut Open, body: &[u8], bytes: &mut usize) -> Result<()> {
    if body.is_empty() {
        return Ok(());
    }
    if t.items.is_empty() {
        if body.len() < 4 || le32(body, 0) != TRANS_MAGIC {
            return Err(corrupt("bad transaction header magic"));
        }
        if body.len() > TRANS_HEADER {
            return Err(corrupt("bad transaction header length"));
        }
        if body.len() == TRANS_HEADER {
            t.items.push(Item::default());
        }
        return Ok(());
    }
    let full = t
        .items
        .last()
        .is_some_and(|i| i.total != 0 && i.total == i.regions.len());
    if full {
        t.items.push(Item::default());
    }
    let item = t
        .items
        .last_mut()
        .ok_or_else(|| corrupt("no item to add to"))?;
    if item.total == 0 {
        let n = le16(body, 2);
        if body.len() < 4 || n == 0 || n > MAX_REGIONS {
            return Err(corrupt(format!("bad number of regions ({n}) in an item")));
        }
        item.total = usize::from(n);
    }
    if item.total <= item.regions.len() {
        return Err(corrupt("item has more regions than its format says"));
    }
    *bytes += body.len();
    item.regions.push(body.to_vec());
    Ok(())
}

/// `xlog_recover_add_to_cont_trans`: the rest of the last region.
fn add_cont(t: &mut Open, body: &[u8], bytes: &mut usize) -> Result<()> {
    if t.items.is_empty() {
        // The rest of a split transaction header.
        if body.len() > TRANS_HEADER {
            return Err(corrupt("bad transaction header length"));
        }
        t.items.push(Item::default());
        return Ok(());
    }
    let region = t
        .items
        .last_mut()
        .and_then(|i| i.regions.last_mut())
        .ok_or_else(|| corrupt("continuation of no region"))?;
    *bytes += body.len();
    region.extend_from_slice(body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operation: header then body.
    fn op(tid: u32, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut v = tid.to_be_bytes().to_vec();
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(&[CLIENT_TRANSACTION, flags, 0, 0]);
        v.extend_from_slice(body);
        v
    }

    fn record(lsn: u64, ops: &[Vec<u8>]) -> Record {
        Record {
            lsn,
            num_ops: ops.len() as u32,
            data: ops.concat(),
        }
    }

    fn header() -> Vec<u8> {
        let mut h = TRANS_MAGIC.to_le_bytes().to_vec();
        h.extend_from_slice(&[0; 12]);
        h
    }

    /// An item format region saying the item has `n` regions.
    fn format(n: u16) -> Vec<u8> {
        let mut f = 0x123cu16.to_le_bytes().to_vec();
        f.extend_from_slice(&n.to_le_bytes());
        f.extend_from_slice(&[0; 12]);
        f
    }

    #[test]
    fn split_regions_join_and_only_commits_count() -> crate::Result<()> {
        let mut b = Builder::default();
        // Transaction 1: header split over two records, an item whose
        // data region continues into the next record; then committed.
        b.record(record(
            1 << 32,
            &[
                op(1, START, &[]),
                op(1, 0, &header()[..8]),
                op(2, START, &[]),
                op(2, 0, &header()),
                op(2, 0, &format(1)),
            ],
        ))?;
        b.record(record(
            2 << 32,
            &[
                op(1, WAS_CONT | END, &header()[8..]),
                op(1, 0, &format(2)),
                op(1, CONTINUE, b"abc"),
            ],
        ))?;
        b.record(record(
            3 << 32,
            &[op(1, WAS_CONT | END, b"def"), op(1, COMMIT, &[])],
        ))?;
        // Transaction 2 never commits; 3 is not started in the log.
        b.record(record(4 << 32, &[op(3, 0, b"slack")]))?;
        assert_eq!(b.committed.len(), 1);
        let t = &b.committed[0];
        assert_eq!(t.lsn, 1 << 32);
        assert_eq!(t.items.len(), 1);
        assert_eq!(t.items[0].regions, vec![format(2), b"abcdef".to_vec()]);
        Ok(())
    }

    #[test]
    fn bad_operations_are_errors() {
        let started = |ops: &[Vec<u8>]| {
            let mut b = Builder::default();
            let mut all = vec![op(1, START, &[]), op(1, 0, &header())];
            all.extend_from_slice(ops);
            b.record(record(1, &all))
        };
        assert!(started(&[op(1, START | COMMIT, &[])]).is_err());
        assert!(started(&[op(1, 0, &format(0))]).is_err());
        assert!(started(&[op(1, 0, &format(1)), op(1, 0, b"more")]).is_err());
        let mut r = record(1, &[op(1, START, &[])]);
        r.data[8] = 0x42;
        assert!(Builder::default().record(r).is_err());
        // An operation longer than its record.
        let mut r = record(1, &[op(1, START, &[])]);
        r.data[7] = 200;
        assert!(Builder::default().record(r).is_err());
        // A bad transaction header.
        let mut b = Builder::default();
        let r = record(1, &[op(1, START, &[]), op(1, 0, &[0; 16])]);
        assert!(b.record(r).is_err());
    }
}
