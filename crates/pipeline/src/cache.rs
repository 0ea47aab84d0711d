//! Completion cache with "typing through" (as llama.vim and Tabby do): completions are kept in
//! a small LRU keyed by the text around the cursor. A request whose prefix is an earlier
//! request's prefix plus the first characters of the completion shown then (the user is
//! typing what the ghost text says) is answered with the rest of that completion, without the
//! model. Pure data structure: no I/O, no model.

use std::collections::VecDeque;

/// Bytes of prefix kept in a key: enough to pin the cursor's neighbourhood.
const PREFIX_WINDOW: usize = 512;
/// Bytes of suffix kept in a key.
const SUFFIX_WINDOW: usize = 256;
/// How far back (bytes) typed text is matched against a cached completion.
const MAX_TYPED: usize = 256;

#[derive(Clone, Debug)]
struct Entry {
    /// Identifies everything else that shapes the answer (model options, adapter, layout).
    variant: u64,
    prefix: String,
    suffix: String,
    completion: String,
}

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The completion to show from the current cursor.
    pub text: String,
    /// Bytes the user typed through since the cached request (0: exact hit).
    pub typed: usize,
}

#[derive(Clone, Debug)]
pub struct CompletionCache {
    entries: VecDeque<Entry>,
    capacity: usize,
}

fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

fn head(s: &str, n: usize) -> &str {
    let mut i = n.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

impl CompletionCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Remember `completion` for the cursor between `prefix` and `suffix`.
    pub fn insert(&mut self, variant: u64, prefix: &str, suffix: &str, completion: &str) {
        let (p, s) = (tail(prefix, PREFIX_WINDOW), head(suffix, SUFFIX_WINDOW));
        self.entries
            .retain(|e| !(e.variant == variant && e.prefix == p && e.suffix == s));
        self.entries.push_front(Entry {
            variant,
            prefix: p.to_string(),
            suffix: s.to_string(),
            completion: completion.to_string(),
        });
        self.entries.truncate(self.capacity);
    }

    /// An exact hit, or a typed-through one: the prefix is a cached prefix followed by the
    /// start of its completion. An entry fully typed through is no hit (nothing left to show).
    pub fn get(&mut self, variant: u64, prefix: &str, suffix: &str) -> Option<Hit> {
        let s = head(suffix, SUFFIX_WINDOW);
        let found = self.entries.iter().enumerate().find_map(|(i, e)| {
            if e.variant != variant || e.suffix != s {
                return None;
            }
            // Try every way the prefix could end with the start of the completion.
            let max = e.completion.len().min(MAX_TYPED).min(prefix.len());
            (0..=max)
                .filter(|&k| e.completion.is_char_boundary(k))
                .find_map(|k| {
                    let typed = &e.completion[..k];
                    let before = prefix.strip_suffix(typed)?;
                    (tail(before, PREFIX_WINDOW) == e.prefix && k < e.completion.len()).then(|| {
                        Hit {
                            text: e.completion[k..].to_string(),
                            typed: k,
                        }
                    })
                })
                .map(|hit| (i, hit))
        });
        let (i, hit) = found?;
        // Most recently used first.
        let e = self.entries.remove(i).expect("index from iteration");
        self.entries.push_front(e);
        Some(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_hit_and_miss() {
        let mut c = CompletionCache::new(4);
        c.insert(1, "def f():\n    return ", "\n", "a + b");
        assert_eq!(
            c.get(1, "def f():\n    return ", "\n"),
            Some(Hit {
                text: "a + b".into(),
                typed: 0
            })
        );
        assert_eq!(
            c.get(2, "def f():\n    return ", "\n"),
            None,
            "other options"
        );
        assert_eq!(
            c.get(1, "def f():\n    return ", "\nx"),
            None,
            "other suffix"
        );
        assert_eq!(
            c.get(1, "def g():\n    return ", "\n"),
            None,
            "other prefix"
        );
    }

    #[test]
    fn typing_through_serves_the_rest() {
        let mut c = CompletionCache::new(4);
        c.insert(0, "x = ", "", "compute(1, 2)");
        assert_eq!(c.get(0, "x = comp", "").unwrap().text, "ute(1, 2)");
        assert_eq!(c.get(0, "x = compute(1, ", "").unwrap().typed, 11);
        // Typed something else: no hit.
        assert_eq!(c.get(0, "x = compare", ""), None);
        // Typed it all: nothing left to show.
        assert_eq!(c.get(0, "x = compute(1, 2)", ""), None);
    }

    #[test]
    fn multibyte_text_and_long_prefixes_are_safe() {
        let mut c = CompletionCache::new(2);
        let long = "é".repeat(1000);
        c.insert(0, &long, &long, "😀ünï");
        let typed = format!("{long}😀");
        assert_eq!(c.get(0, &typed, &long).unwrap().text, "ünï");
        // Keys keep only the neighbourhood: a change far above the cursor still hits.
        let mut far = String::from("changed");
        far.push_str(&long);
        assert!(c.get(0, &far, &long).is_some());
    }

    #[test]
    fn least_recently_used_entries_are_evicted() {
        let mut c = CompletionCache::new(2);
        c.insert(0, "a", "", "1");
        c.insert(0, "b", "", "2");
        assert!(c.get(0, "a", "").is_some()); // a is now the most recent
        c.insert(0, "c", "", "3");
        assert_eq!(c.len(), 2);
        assert!(c.get(0, "b", "").is_none());
        assert!(c.get(0, "a", "").is_some());
        assert!(c.get(0, "c", "").is_some());
    }
}
