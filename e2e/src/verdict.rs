//! The verdict on a stream of test messages, one rule for every tier: message `i` (of
//! `0..expected`) has key `k<i mod keys>`, and what arrived is judged for loss, repeats and
//! per-key order. The Rust tests call [`Verdict::of`]; the shell tiers pipe what they read
//! through the `stream-verdict` binary.

use std::collections::{HashMap, HashSet};

/// What arrived, judged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Test messages received, repeats included.
    pub received: usize,
    /// Distinct test messages among them.
    pub distinct: usize,
    /// Messages of `0..expected` that never arrived.
    pub lost: usize,
    /// Deliveries of a message already received.
    pub duplicates: usize,
    /// First deliveries that came after a later message of their key, or under another key.
    pub out_of_order: usize,
    /// Deliveries that are not test messages (e.g. a smoke test's round trip).
    pub foreign: usize,
}

impl Verdict {
    /// Judges `arrivals` in arrival order: each the message's number (`None` when it is not a
    /// test message) and the key it arrived with (`None` where the protocol carries none, e.g.
    /// MQTT 3.1.1: then the number's own key is taken).
    pub fn of<'a>(
        arrivals: impl IntoIterator<Item = (Option<usize>, Option<&'a str>)>,
        expected: usize,
        keys: usize,
    ) -> Self {
        let mut verdict = Verdict::default();
        let mut seen = HashSet::new();
        let mut newest: HashMap<String, usize> = HashMap::new();
        for (number, key) in arrivals {
            let Some(number) = number else {
                verdict.foreign += 1;
                continue;
            };
            verdict.received += 1;
            if !seen.insert(number) {
                verdict.duplicates += 1;
                continue;
            }
            let own_key = format!("k{}", number % keys.max(1));
            let key = key.map_or_else(|| own_key.clone(), str::to_owned);
            let behind = newest.get(&key).is_some_and(|&later| later > number);
            if key != own_key || behind {
                verdict.out_of_order += 1;
            }
            if !behind {
                newest.insert(key, number);
            }
        }
        verdict.distinct = seen.len();
        verdict.lost = (0..expected).filter(|i| !seen.contains(i)).count();
        verdict
    }

    /// The fields in a line for shell scripts: received distinct lost duplicates out_of_order
    /// foreign.
    #[must_use]
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.received, self.distinct, self.lost, self.duplicates, self.out_of_order, self.foreign
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(arrivals: &[(usize, &str)], expected: usize) -> Verdict {
        Verdict::of(arrivals.iter().map(|(n, k)| (Some(*n), Some(*k))), expected, 2)
    }

    #[test]
    fn a_complete_stream_in_key_order_is_clean() {
        let verdict = judge(&[(0, "k0"), (1, "k1"), (3, "k1"), (2, "k0")], 4);
        assert_eq!(verdict, Verdict { received: 4, distinct: 4, ..Verdict::default() });
    }

    #[test]
    fn missing_repeated_and_overtaken_messages_are_each_counted() {
        // 2 overtakes 0 in k0; 1 comes twice; 3 never comes.
        let verdict = judge(&[(2, "k0"), (0, "k0"), (1, "k1"), (1, "k1")], 4);
        assert_eq!((verdict.lost, verdict.duplicates, verdict.out_of_order), (1, 1, 1));
        assert_eq!((verdict.received, verdict.distinct), (4, 3));
    }

    #[test]
    fn a_message_under_another_key_is_out_of_order_and_others_are_foreign() {
        let arrivals = [(Some(0), Some("k1")), (None, Some("smoke")), (Some(1), None)];
        let verdict = Verdict::of(arrivals, 2, 2);
        assert_eq!((verdict.out_of_order, verdict.foreign, verdict.lost), (1, 1, 0));
        assert_eq!(verdict.line(), "2 2 0 0 1 1");
    }
}
