//! A run's frozen experiment as dotted keys and values (`train.lr = "0.001"`), for comparing
//! runs and grouping folds.
//!
//! A workspace holds hundreds of runs of a few experiments, so their keys and most values
//! repeat: each distinct string is kept once and shared, and a run holds a sorted list of
//! pairs of references (a few KB a run instead of a map of its own strings).

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};

/// Every key and value seen, once.
static STRINGS: LazyLock<Mutex<HashSet<Arc<str>>>> = LazyLock::new(Default::default);

fn intern(text: &str) -> Arc<str> {
    let Ok(mut strings) = STRINGS.lock() else {
        return Arc::from(text);
    };
    if let Some(shared) = strings.get(text) {
        return Arc::clone(shared);
    }
    let shared: Arc<str> = Arc::from(text);
    strings.insert(Arc::clone(&shared));
    shared
}

/// Keys and values, sorted by key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config(Vec<(Arc<str>, Arc<str>)>);

impl Config {
    /// The experiment file's table flattened: nested tables become dotted keys, strings their
    /// text, other values their TOML form.
    pub fn from_table(table: &toml::Table) -> Config {
        fn walk(prefix: &str, table: &toml::Table, out: &mut Config) {
            for (key, value) in table {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match value {
                    toml::Value::Table(inner) => walk(&key, inner, out),
                    toml::Value::String(s) => out.insert(&key, s),
                    other => out.insert(&key, &other.to_string()),
                }
            }
        }
        let mut out = Config::default();
        walk("", table, &mut out);
        out
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        let at = self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key)).ok()?;
        Some(&self.0[at].1)
    }

    pub fn insert(&mut self, key: &str, value: &str) {
        match self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key)) {
            Ok(at) => self.0[at].1 = intern(value),
            Err(at) => self.0.insert(at, (intern(key), intern(value))),
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Config {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Config {
        let mut config = Config::default();
        for (key, value) in pairs {
            config.insert(key.as_ref(), value.as_ref());
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_flatten_to_sorted_dotted_keys_sharing_their_strings() {
        let table: toml::Table = "[train]\nlr = 0.001\nschedule = \"cosine\"\n[data]\nsplit = [0.6, 0.2, 0.2]\n"
            .parse()
            .expect("toml");
        let a = Config::from_table(&table);
        let b = Config::from_table(&table);
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            ["data.split", "train.lr", "train.schedule"]
        );
        assert_eq!(a.get("train.schedule"), Some("cosine"));
        assert_eq!(a.get("train.lr"), Some("0.001"));
        assert_eq!(a.get("train.nothing"), None);
        assert!(Arc::ptr_eq(&a.0[2].1, &b.0[2].1), "one copy of each string");
        let mut c = a.clone();
        c.insert("train.lr", "0.01");
        assert_eq!((c.get("train.lr"), a.get("train.lr")), (Some("0.01"), Some("0.001")));
    }
}
