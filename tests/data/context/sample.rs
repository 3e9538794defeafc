use std::collections::HashMap;
use std::fmt;

/// A word counter.
pub struct Counter {
    counts: HashMap<String, usize>,
}

impl Counter {
    pub fn new() -> Self {
        Counter { counts: HashMap::new() }
    }

    pub fn add(&mut self, text: &str) {
        for word in text.split_whitespace() {
            *self.counts.entry(word.to_lowercase()).or_insert(0) += 1;
        }
    }

    pub fn top(&self, n: usize) -> Vec<(&String, &usize)> {
        let mut all: Vec<_> = self.counts.iter().collect();
        all.sort_by(|a, b| b.1.cmp(a.1));
        all.truncate(n);
        all
    }
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} words", self.counts.len())
    }
}

const SAMPLE: &str = "the quick brown fox
jumps over the lazy dog";

fn longest(words: &[&str]) -> Option<usize> {
    words.iter().map(|w| w.len()).max()
}

pub fn run() -> usize {
    let mut c = Counter::new();
    c.add(SAMPLE);
    let words: Vec<&str> = SAMPLE.split_whitespace().collect();
    longest(&words).unwrap_or(0) + c.top(3).len()
}
