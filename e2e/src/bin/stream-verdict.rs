//! The verdict on a stream that a shell tier read (e2e-nodes.sh), by the rule the Rust tests use
//! (`oms_e2e::Verdict`):
//!
//!   stream-verdict <expected> <keys> < lines
//!
//! Each line is `<key><TAB><message number>`; a line that is not one (e.g. a smoke test's round
//! trip) is foreign. Prints `received distinct lost duplicates out_of_order foreign`.

use std::io::BufRead;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [expected, keys] = args.as_slice() else {
        anyhow::bail!("usage: stream-verdict <expected> <keys> < lines of <key><TAB><number>");
    };
    let expected: usize = expected.parse().context("<expected> is a count")?;
    let keys: usize = keys.parse().context("<keys> is a count")?;
    let lines: Vec<String> = std::io::stdin().lock().lines().collect::<Result<_, _>>()?;
    let arrivals = lines.iter().map(|line| match line.split_once('\t') {
        Some((key, number)) if key.starts_with('k') => (number.trim().parse().ok(), Some(key)),
        _ => (None, None),
    });
    println!("{}", oms_e2e::Verdict::of(arrivals, expected, keys).line());
    Ok(())
}
