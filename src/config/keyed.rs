//! Typing the configuration's table with errors that name their key: a
//! serde `Deserializer` over a `toml::Value` that knows the dotted path of
//! the value it reads (`limits.max_object_bytes`, `principals[0].roles[1]`)
//! and stamps it, with the value, on the first error raised there. The
//! loader then says where that key came from (the file or a `SEALGATE_*`
//! variable). This file only types values: it must never check a setting
//! or read the environment.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, Expected, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, Visitor,
};

/// A typing error and the key it belongs to.
#[derive(Debug)]
pub(super) struct KeyError {
    /// The dotted path of the key (empty: the whole file).
    pub(super) path: Option<String>,
    /// The value found there, as TOML (not for tables).
    pub(super) value: Option<String>,
    /// What is wrong, or what was expected.
    pub(super) message: String,
}

impl KeyError {
    /// Stamps `path` and `value` on an error that has no key yet.
    fn at(mut self, path: &str, value: Option<&toml::Value>) -> Self {
        if self.path.is_none() && !path.is_empty() {
            self.path = Some(path.to_string());
            self.value = value.filter(|v| !v.is_table()).map(show);
        }
        self
    }
}

/// A value as TOML, shortened to one readable line.
fn show(value: &toml::Value) -> String {
    let text = value.to_string().replace('\n', " ");
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KeyError {}

/// serde's names of primitive types, as an operator reads them.
fn expected(exp: &dyn Expected) -> String {
    let text = exp.to_string();
    match text.as_str() {
        "u8" | "u16" | "u32" | "u64" | "usize" => format!("a whole number from 0 ({text})"),
        "i8" | "i16" | "i32" | "i64" | "isize" => format!("a whole number ({text})"),
        "f32" | "f64" => "a number".into(),
        _ => text,
    }
}

impl de::Error for KeyError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            path: None,
            value: None,
            message: msg.to_string(),
        }
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Self::custom(format_args!("expected {}, not {unexp}", expected(exp)))
    }

    fn invalid_value(_unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Self::custom(format_args!("expected {}", expected(exp)))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(format_args!(
            "{variant:?} is not one of: {}",
            expected.join(", ")
        ))
    }

    fn unknown_field(_field: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(format_args!(
            "unknown key; the keys here are: {}",
            expected.join(", ")
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom(format_args!("`{field}` is required here"))
    }
}

/// `parent.key`, or `key` at the top.
fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Types `value` (the whole file's table) as `T`.
pub(super) fn from_value<T: de::DeserializeOwned>(value: &toml::Value) -> Result<T, KeyError> {
    T::deserialize(ValueDe {
        value,
        path: String::new(),
    })
}

/// The deserializer of one value at `path`.
struct ValueDe<'a> {
    value: &'a toml::Value,
    path: String,
}

impl<'de> Deserializer<'de> for ValueDe<'_> {
    type Error = KeyError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        let result = match self.value {
            toml::Value::String(s) => visitor.visit_str(s),
            toml::Value::Integer(i) => visitor.visit_i64(*i),
            toml::Value::Float(f) => visitor.visit_f64(*f),
            toml::Value::Boolean(b) => visitor.visit_bool(*b),
            toml::Value::Datetime(d) => visitor.visit_string(d.to_string()),
            toml::Value::Array(items) => visitor.visit_seq(Seq {
                items: items.iter().enumerate(),
                path: &self.path,
            }),
            toml::Value::Table(table) => visitor.visit_map(Map {
                entries: table.iter(),
                pending: None,
                path: &self.path,
            }),
        };
        result.map_err(|e| e.at(&self.path, Some(self.value)))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, KeyError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, KeyError> {
        match self.value {
            toml::Value::String(s) => visitor
                .visit_enum(s.as_str().into_deserializer())
                .map_err(|e: KeyError| e.at(&self.path, Some(self.value))),
            _ => self.deserialize_any(visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

/// The items of an array, at `path[i]`.
struct Seq<'p, I> {
    items: I,
    path: &'p str,
}

impl<'de, 'v, I: Iterator<Item = (usize, &'v toml::Value)>> SeqAccess<'de> for Seq<'_, I> {
    type Error = KeyError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, KeyError> {
        let Some((i, value)) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{i}]", self.path);
        seed.deserialize(ValueDe {
            value,
            path: path.clone(),
        })
        .map(Some)
        // A type that reads a string and then refuses it raises its
        // error after the value's deserializer is gone: stamped here.
        .map_err(|e| e.at(&path, Some(value)))
    }
}

/// The entries of a table, at `path.key`.
struct Map<'v, 'p, I> {
    entries: I,
    pending: Option<(&'v String, &'v toml::Value)>,
    path: &'p str,
}

impl<'de, 'v, I: Iterator<Item = (&'v String, &'v toml::Value)>> MapAccess<'de> for Map<'v, '_, I> {
    type Error = KeyError;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, KeyError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.pending = Some((key, value));
        seed.deserialize(key.as_str().into_deserializer())
            .map(Some)
            .map_err(|e: KeyError| e.at(&join(self.path, key), Some(value)))
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, KeyError> {
        let (key, value) = self
            .pending
            .take()
            .ok_or_else(|| de::Error::custom("a value without its key"))?;
        let path = join(self.path, key);
        seed.deserialize(ValueDe {
            value,
            path: path.clone(),
        })
        .map_err(|e| e.at(&path, Some(value)))
    }
}
