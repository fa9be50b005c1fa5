//! Editing an experiment file as a document (the dashboard's editor): values set, read and
//! removed by dotted key with the file's comments and order kept, and the names a choice
//! key accepts.

use super::{
    Activation, Axis, ForegroundSampling, LauncherKind, Layout, Modality, Norm, Normalization, Optimizer, Output,
    Precision, Schedule, Upsample,
};
use crate::config::Choice;

/// Sets the dotted `key` (`train.lr`) in an experiment document to `value`, creating the
/// tables on the way. A value already there keeps its place and its comments.
pub fn set_value(document: &mut toml_edit::DocumentMut, key: &str, value: toml_edit::Value) {
    let parts: Vec<&str> = key.split('.').collect();
    let Some((last, tables)) = parts.split_last() else {
        return;
    };
    let mut table = document.as_table_mut() as &mut dyn toml_edit::TableLike;
    for part in tables {
        let entry = table.entry(part).or_insert_with(|| {
            let mut new = toml_edit::Table::new();
            new.set_implicit(true);
            toml_edit::Item::Table(new)
        });
        let Some(next) = entry.as_table_like_mut() else {
            // A key that is not a table here: the experiment check reports the bad value.
            return;
        };
        table = next;
    }
    let mut value = value;
    if let Some(old) = table.get(last).and_then(toml_edit::Item::as_value) {
        *value.decor_mut() = old.decor().clone();
    }
    table.insert(last, toml_edit::Item::Value(value));
}

/// The dotted `key`'s item in an experiment document, if it is there.
pub fn get_value<'a>(document: &'a toml_edit::DocumentMut, key: &str) -> Option<&'a toml_edit::Value> {
    let mut item = document.as_item();
    for part in key.split('.') {
        item = item.as_table_like()?.get(part)?;
    }
    item.as_value()
}

/// Removes the dotted `key` from an experiment document (it goes back to its default).
pub fn remove_value(document: &mut toml_edit::DocumentMut, key: &str) {
    let parts: Vec<&str> = key.split('.').collect();
    let Some((last, tables)) = parts.split_last() else {
        return;
    };
    let mut table = document.as_table_mut() as &mut dyn toml_edit::TableLike;
    for part in tables {
        let Some(next) = table.get_mut(part).and_then(toml_edit::Item::as_table_like_mut) else {
            return;
        };
        table = next;
    }
    table.remove(last);
}

/// The names a named-choice key accepts (`train.optimizer`: adamw, nadam, ...), for keys
/// that take one name.
pub fn choices(key: &str) -> Option<&'static [&'static str]> {
    Some(match key {
        "data.layout" => Layout::NAMES,
        "data.normalization" => Normalization::NAMES,
        "model.norm" => Norm::NAMES,
        "model.activation" => Activation::NAMES,
        "model.upsample" => Upsample::NAMES,
        "model.output" => Output::NAMES,
        "train.foreground_sampling" => ForegroundSampling::NAMES,
        "train.optimizer" => Optimizer::NAMES,
        "train.schedule" => Schedule::NAMES,
        "train.precision" => Precision::NAMES,
        "preview.modality" => Modality::NAMES,
        "preview.axis" => Axis::NAMES,
        "run.launcher" => LauncherKind::NAMES,
        _ => return None,
    })
}
