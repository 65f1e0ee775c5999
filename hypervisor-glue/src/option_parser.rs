//! Cloud Hypervisor's option syntax (`key=value` pairs separated by commas), with errors
//! that name the option, the key and the offending text.
//!
//! What Cloud Hypervisor's `option_parser` crate accepts, this accepts with the same result,
//! and what it rejects, this rejects:
//!
//! - the input is trimmed, then split at commas outside `[...]` and outside `"..."`; a `]`
//!   without its `[`, an unclosed `[` or an unclosed `"` is invalid syntax;
//! - each item is split once at its first `=`; the part before it is the key, untrimmed (so
//!   `boot=1, max=2` names the unknown key ` max`), the part after it is the value, trimmed;
//! - a registered key without `=` is invalid syntax, an unregistered one an unknown key;
//! - an empty value means "not given"; a later occurrence of a key replaces an earlier one;
//! - plain values (integers, names) lose their quotes (`""` inside quotes is one `"`),
//!   toggles and lists keep them, exactly as Cloud Hypervisor's `Parseable` types do.
//!
//! The one deliberate difference: an integer list may expand to at most
//! [`MAX_INTEGER_LIST_LEN`] values, where Cloud Hypervisor would try to allocate whatever a
//! range like `0-18446744073709551615` asks for.

use std::fmt::Display;

/// The most values one integer list (`[0-3,8]`) may expand to. Linux supports at most 8192
/// CPUs (`CONFIG_NR_CPUS` with `MAXSMP`), so every real host CPU list fits.
pub const MAX_INTEGER_LIST_LEN: usize = 65_536;

/// An option string that cannot be parsed; each names the option, the key and the offending
/// text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// A key the option does not have.
    #[error("unknown key `{key}` in {option}; valid keys: {}", valid.join(", "))]
    UnknownKey {
        /// The option, e.g. `--cpus`.
        option: &'static str,
        /// The key as given.
        key: String,
        /// The option's keys.
        valid: Vec<String>,
    },
    /// Unbalanced brackets or quotes, an empty item, or a key without `=`.
    #[error("invalid {option} syntax in `{text}`: {reason}")]
    InvalidSyntax {
        /// The option, e.g. `--cpus`.
        option: &'static str,
        /// The offending text.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value the key does not accept.
    #[error("{option} {key}={value}: {reason}")]
    InvalidValue {
        /// The option, e.g. `--cpus`.
        option: &'static str,
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// Why it is not accepted.
        reason: String,
    },
}

/// Why a text cannot be split at its commas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitError {
    /// A `]` closes a bracket that was never opened.
    UnopenedBracket,
    /// Some `[` are never closed.
    UnclosedBracket,
    /// A `"` is never closed.
    UnclosedQuote,
}

impl Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitError::UnopenedBracket => "a `]` has no matching `[`",
            SplitError::UnclosedBracket => "a `[` is not closed",
            SplitError::UnclosedQuote => "a `\"` is not closed",
        })
    }
}

/// Splits `text` (trimmed) at the commas outside brackets and quotes. Quotes and brackets
/// stay in the parts; an empty text is one empty part.
pub fn split_commas(text: &str) -> Result<Vec<String>, SplitError> {
    let mut parts = Vec::new();
    let mut depth = 0u64;
    let mut in_quotes = false;
    let mut current = String::new();
    for c in text.trim().chars() {
        match c {
            '"' => in_quotes = !in_quotes,
            _ if in_quotes => {}
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1).ok_or(SplitError::UnopenedBracket)?,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    if in_quotes {
        return Err(SplitError::UnclosedQuote);
    }
    if depth != 0 {
        return Err(SplitError::UnclosedBracket);
    }
    Ok(parts)
}

/// Removes the quotes from a value: `"a,b"` is `a,b`, and `""` inside quotes is one `"`.
pub fn dequote(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut in_quotes = false;
    let mut prev = '\0';
    for c in value.chars() {
        if c == '"' {
            if prev == '"' && !in_quotes {
                out.push('"');
            }
            in_quotes = !in_quotes;
        } else {
            out.push(c);
        }
        prev = c;
    }
    out
}

/// Cloud Hypervisor's toggle: `on`/`true` or `off`/`false` (any case; `""` is off). Quotes are
/// not removed.
pub fn parse_toggle(value: &str) -> Result<bool, String> {
    match value.to_lowercase().as_str() {
        "on" | "true" => Ok(true),
        "off" | "false" | "" => Ok(false),
        _ => Err("expected on or off (or true or false)".to_owned()),
    }
}

/// Cloud Hypervisor's integer list: outer brackets trimmed, items separated by commas, each
/// `N` or an upward range `A-B` (both included). At most `max_len` values.
pub fn parse_integer_list(value: &str, max_len: usize) -> Result<Vec<usize>, String> {
    let body = value.trim().trim_matches(|c| c == '[' || c == ']');
    let mut list = Vec::new();
    for range in body.split(',') {
        let items: Vec<&str> = range.split('-').collect();
        let (start, end) = match items.as_slice() {
            [single] => {
                let n = parse_u64(single)?;
                (n, n)
            }
            [start, end] => {
                let (start, end) = (parse_u64(start)?, parse_u64(end)?);
                if start >= end {
                    return Err(format!(
                        "range `{range}` must go upward (A-B with A below B)"
                    ));
                }
                (start, end)
            }
            _ => return Err(format!("`{range}` is neither N nor A-B")),
        };
        let count = (end - start).saturating_add(1);
        let room = max_len.saturating_sub(list.len());
        if usize::try_from(count).map_or(true, |count| count > room) {
            return Err(format!("the list has more than {max_len} values"));
        }
        for n in start..=end {
            list.push(usize::try_from(n).map_err(|_| format!("{n} is too large"))?);
        }
    }
    Ok(list)
}

fn parse_u64(text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .map_err(|err| format!("`{text}` is not an unsigned integer ({err})"))
}

/// Cloud Hypervisor's string list: outer brackets trimmed, split at commas outside inner
/// brackets and quotes; the items keep their quotes and spaces.
pub fn parse_string_list(value: &str) -> Result<Vec<String>, String> {
    split_commas(value.trim().trim_matches(|c| c == '[' || c == ']'))
        .map_err(|err| format!("not a list: {err}"))
}

/// One `key@[list]` pair of a tuple list.
fn parse_tuple(tuple: &str, max_len: usize) -> Result<(u32, Vec<usize>), String> {
    let trimmed = tuple.trim();
    let mut in_quotes = false;
    let mut at = None;
    for (idx, byte) in trimmed.bytes().enumerate() {
        match byte {
            b'"' => in_quotes = !in_quotes,
            b'@' if !in_quotes => {
                if at.is_some() {
                    return Err(format!("`{trimmed}` has more than one `@`"));
                }
                if idx == 0 {
                    return Err(format!("`{trimmed}` has nothing before its `@`"));
                }
                at = Some(idx);
            }
            _ => {}
        }
    }
    let at = at.ok_or_else(|| format!("`{trimmed}` is not <vcpu>@[<host cpus>]"))?;
    let (key, list) = (&trimmed[..at], &trimmed[at + 1..]);
    let vcpu = dequote(key)
        .parse::<u32>()
        .map_err(|err| format!("vCPU `{key}` is not an unsigned 32-bit integer ({err})"))?;
    let list = parse_integer_list(list, max_len).map_err(|err| format!("vCPU {vcpu}: {err}"))?;
    Ok((vcpu, list))
}

/// Cloud Hypervisor's tuple list `[k@[list],k@[list]]`: outer brackets required, pairs split
/// at commas outside inner brackets, each split at its one `@`.
pub fn parse_tuple_list(value: &str, max_len: usize) -> Result<Vec<(u32, Vec<usize>)>, String> {
    let body = value
        .trim()
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .ok_or_else(|| {
            "expected one pair of enclosing brackets: [<vcpu>@[<host cpus>],...]".to_owned()
        })?;
    let tuples = split_commas(body).map_err(|err| format!("not a list: {err}"))?;
    tuples
        .iter()
        .map(|tuple| parse_tuple(tuple, max_len))
        .collect()
}

/// A parser for one option's `key=value,...` string.
#[derive(Debug)]
pub struct OptionParser {
    option: &'static str,
    keys: Vec<&'static str>,
    values: Vec<Option<String>>,
}

impl OptionParser {
    /// A parser for `option` (e.g. `--cpus`, used in messages) that knows `keys`.
    pub fn new(option: &'static str, keys: &[&'static str]) -> Self {
        Self {
            option,
            keys: keys.to_vec(),
            values: vec![None; keys.len()],
        }
    }

    /// Parses `input`, recording each key's value; a later occurrence of a key replaces an
    /// earlier one. Blank input sets nothing.
    pub fn parse(&mut self, input: &str) -> Result<(), OptionError> {
        if input.trim().is_empty() {
            return Ok(());
        }
        let items = split_commas(input).map_err(|err| self.syntax(input, err.to_string()))?;
        for item in &items {
            let (key, value) = match item.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (item.as_str(), None),
            };
            if key.is_empty() {
                let reason = if item.is_empty() {
                    "an empty item (two commas in a row, or a comma at an end)"
                } else {
                    "no key before `=`"
                };
                return Err(self.syntax(item, reason.to_owned()));
            }
            let Some(slot) = self.keys.iter().position(|k| *k == key) else {
                return Err(OptionError::UnknownKey {
                    option: self.option,
                    key: key.to_owned(),
                    valid: self.keys.iter().map(|k| (*k).to_owned()).collect(),
                });
            };
            let Some(value) = value else {
                return Err(self.syntax(item, format!("`{key}` needs a value: {key}=<value>")));
            };
            if self.values[slot].is_some() {
                log::debug!("{} {key} given again; the later value counts", self.option);
            }
            self.values[slot] = Some(value.trim().to_owned());
        }
        Ok(())
    }

    /// The value of `key` as given (quotes kept); `None` when absent or empty.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.keys
            .iter()
            .position(|k| *k == key)
            .and_then(|slot| self.values[slot].as_deref())
            .filter(|value| !value.is_empty())
    }

    /// The value of `key` without its quotes; `None` when absent or empty.
    pub fn get(&self, key: &str) -> Option<String> {
        self.raw(key).map(dequote)
    }

    /// Converts the raw value (quotes kept, as Cloud Hypervisor's toggles and lists see it);
    /// `parse` returns the reason a value is refused.
    pub fn convert_raw<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, OptionError> {
        self.raw(key)
            .map(|raw| parse(raw).map_err(|reason| self.invalid(key, raw, reason)))
            .transpose()
    }

    /// Converts the value without its quotes (as Cloud Hypervisor's plain values see it).
    pub fn convert<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, OptionError> {
        self.raw(key)
            .map(|raw| parse(&dequote(raw)).map_err(|reason| self.invalid(key, raw, reason)))
            .transpose()
    }

    /// An integer of type `T`, described as `what` in errors ("an unsigned 32-bit integer").
    pub fn integer<T>(&self, key: &str, what: &str) -> Result<Option<T>, OptionError>
    where
        T: std::str::FromStr,
        T::Err: Display,
    {
        self.convert(key, |v| {
            v.parse::<T>()
                .map_err(|err| format!("expected {what} ({err})"))
        })
    }

    /// A toggle (`on`/`off`/`true`/`false`, any case).
    pub fn toggle(&self, key: &str) -> Result<Option<bool>, OptionError> {
        self.convert_raw(key, parse_toggle)
    }

    /// The error for `key=value`, refused for `reason`.
    pub fn invalid(&self, key: &str, value: &str, reason: String) -> OptionError {
        OptionError::InvalidValue {
            option: self.option,
            key: key.to_owned(),
            value: value.to_owned(),
            reason,
        }
    }

    fn syntax(&self, text: &str, reason: String) -> OptionError {
        OptionError::InvalidSyntax {
            option: self.option,
            text: text.to_owned(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> OptionParser {
        OptionParser::new("--test", &["size", "topology", "cmdline", "flag"])
    }

    fn parsed(input: &str) -> OptionParser {
        let mut p = parser();
        p.parse(input).expect(input);
        p
    }

    #[test]
    fn split_follows_brackets_and_quotes() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[""]),
            ("  a=1  ", &["a=1"]),
            ("a=1,b=2", &["a=1", "b=2"]),
            ("a=[1,2],b=[[1,2],[3,4]]", &["a=[1,2]", "b=[[1,2],[3,4]]"]),
            ("c=\"x,y\",d", &["c=\"x,y\"", "d"]),
            ("c=\"[\",d=\"]\"", &["c=\"[\"", "d=\"]\""]),
            ("\"\"", &["\"\""]),
            ("a,,b", &["a", "", "b"]),
        ];
        for (input, expected) in cases {
            let expected: Vec<String> = expected.iter().map(|e| (*e).to_owned()).collect();
            assert_eq!(split_commas(input), Ok(expected), "{input}");
        }
        for (input, err) in [
            ("a=[", SplitError::UnclosedBracket),
            ("a=[[[]]]]", SplitError::UnopenedBracket),
            ("a=]", SplitError::UnopenedBracket),
            ("a=\"", SplitError::UnclosedQuote),
            ("a=\"\"\"", SplitError::UnclosedQuote),
            ("a=[\"]", SplitError::UnclosedQuote),
        ] {
            assert_eq!(split_commas(input), Err(err), "{input}");
        }
    }

    #[test]
    fn dequote_matches_cloud_hypervisor() {
        assert_eq!(dequote("a\u{3b2}\"a\"\"\""), "a\u{3b2}a\"");
        assert_eq!(dequote("\"console=ttyS0,9600n8\""), "console=ttyS0,9600n8");
        assert_eq!(dequote("plain"), "plain");
        assert_eq!(dequote("\"\""), "");
        // Unbalanced input (which split_commas never lets through) does not panic.
        assert_eq!(dequote("\"a"), "a");
    }

    #[test]
    fn values_are_trimmed_and_later_keys_win() {
        let p = parsed("size= 128M ,size=256M,topology=[1,2]");
        assert_eq!(p.raw("size"), Some("256M"));
        assert_eq!(p.raw("topology"), Some("[1,2]"));
        assert_eq!(p.raw("cmdline"), None);
        assert_eq!(p.raw("nosuchkey"), None);
        let p = parsed("cmdline=\"console=ttyS0,9600n8\"");
        assert_eq!(p.get("cmdline").as_deref(), Some("console=ttyS0,9600n8"));
        assert_eq!(p.raw("cmdline"), Some("\"console=ttyS0,9600n8\""));
        // `=` inside a value is kept: only the first one splits.
        assert_eq!(parsed("cmdline=a=b").raw("cmdline"), Some("a=b"));
    }

    #[test]
    fn empty_values_and_input_mean_absent() {
        let p = parsed("size=");
        assert_eq!(p.raw("size"), None);
        assert_eq!(p.get("size"), None);
        assert_eq!(p.toggle("size"), Ok(None));
        assert_eq!(parsed("   ").raw("size"), None);
        // An earlier value is cleared by a later empty one.
        assert_eq!(parsed("size=1,size=").raw("size"), None);
        // Quotes make the value non-empty.
        assert_eq!(parsed("size=\"\"").raw("size"), Some("\"\""));
    }

    #[test]
    fn unknown_key_lists_the_valid_ones() {
        let mut p = parser();
        let err = p.parse("size=1,sise=2").expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown key `sise` in --test; valid keys: size, topology, cmdline, flag"
        );
        // Keys are not trimmed, as in Cloud Hypervisor.
        let err = p.parse("size=1, flag=on").expect_err("space");
        assert!(matches!(err, OptionError::UnknownKey { ref key, .. } if key == " flag"));
        // A bare unknown word is an unknown key too.
        assert!(matches!(
            p.parse("size=1,hanging"),
            Err(OptionError::UnknownKey { .. })
        ));
    }

    #[test]
    fn syntax_errors_name_the_text() {
        let mut p = parser();
        for (input, message) in [
            ("size=[", "invalid --test syntax in `size=[`: a `[` is not closed"),
            (
                "size=[]]",
                "invalid --test syntax in `size=[]]`: a `]` has no matching `[`",
            ),
            (
                "cmdline=\"",
                "invalid --test syntax in `cmdline=\"`: a `\"` is not closed",
            ),
            (
                "size",
                "invalid --test syntax in `size`: `size` needs a value: size=<value>",
            ),
            (
                "size=1,,flag=on",
                "invalid --test syntax in ``: an empty item (two commas in a row, or a comma at an end)",
            ),
            ("=5", "invalid --test syntax in `=5`: no key before `=`"),
        ] {
            let err = p.parse(input).expect_err(input);
            assert_eq!(err.to_string(), message, "{input}");
        }
    }

    #[test]
    fn toggles_follow_cloud_hypervisor() {
        for (value, expected) in [
            ("on", true),
            ("ON", true),
            ("True", true),
            ("off", false),
            ("FALSE", false),
        ] {
            assert_eq!(parse_toggle(value), Ok(expected), "{value}");
            let p = parsed(&format!("flag={value}"));
            assert_eq!(p.toggle("flag"), Ok(Some(expected)));
        }
        assert_eq!(parse_toggle(""), Ok(false));
        for bad in ["yes", "1", "\"on\"", "o n"] {
            assert!(parse_toggle(bad).is_err(), "{bad}");
        }
        let err = parsed("flag=maybe").toggle("flag").expect_err("maybe");
        assert_eq!(
            err.to_string(),
            "--test flag=maybe: expected on or off (or true or false)"
        );
    }

    #[test]
    fn integers_lose_quotes_and_name_their_type() {
        let p = parsed("size=\"42\"");
        assert_eq!(p.integer::<u32>("size", "a u32"), Ok(Some(42)));
        // Rust's integer parser takes a leading `+`, and so does Cloud Hypervisor.
        assert_eq!(parsed("size=+7").integer::<u8>("size", "a u8"), Ok(Some(7)));
        let err = parsed("size=256")
            .integer::<u8>("size", "an unsigned 8-bit integer")
            .expect_err("too big");
        assert_eq!(
            err.to_string(),
            "--test size=256: expected an unsigned 8-bit integer (number too large to fit in target type)"
        );
        assert!(parsed("size=-1").integer::<u32>("size", "x").is_err());
        assert!(parsed("size=1 2").integer::<u32>("size", "x").is_err());
    }

    #[test]
    fn integer_lists_expand_ranges() {
        let ok: &[(&str, &[usize])] = &[
            ("[1,3,5]", &[1, 3, 5]),
            ("[0,2-4,7]", &[0, 2, 3, 4, 7]),
            ("0", &[0]),
            ("[[1,2]]", &[1, 2]),
            ("[+1]", &[1]),
            ("[2,2]", &[2, 2]),
        ];
        for (input, expected) in ok {
            assert_eq!(
                parse_integer_list(input, MAX_INTEGER_LIST_LEN).as_deref(),
                Ok(*expected),
                "{input}"
            );
        }
        for (input, reason) in [
            ("[5-3]", "range `5-3` must go upward (A-B with A below B)"),
            ("[5-5]", "range `5-5` must go upward (A-B with A below B)"),
            ("[1-2-3]", "`1-2-3` is neither N nor A-B"),
            (
                "[]",
                "`` is not an unsigned integer (cannot parse integer from empty string)",
            ),
            (
                "[1, 2]",
                "` 2` is not an unsigned integer (invalid digit found in string)",
            ),
            (
                "[-1]",
                "`` is not an unsigned integer (cannot parse integer from empty string)",
            ),
            (
                "[x]",
                "`x` is not an unsigned integer (invalid digit found in string)",
            ),
            (
                "[0-18446744073709551615]",
                "the list has more than 65536 values",
            ),
        ] {
            assert_eq!(
                parse_integer_list(input, MAX_INTEGER_LIST_LEN),
                Err(reason.to_owned()),
                "{input}"
            );
        }
        assert_eq!(parse_integer_list("[0-3]", 4), Ok(vec![0, 1, 2, 3]));
        assert!(parse_integer_list("[0-3,4]", 4).is_err());
    }

    #[test]
    fn string_lists_keep_items_verbatim() {
        assert_eq!(parse_string_list("[a,b]"), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(parse_string_list("a"), Ok(vec!["a".into()]));
        assert_eq!(parse_string_list("[]"), Ok(vec![String::new()]));
        assert_eq!(
            parse_string_list("[\"a\", b]"),
            Ok(vec!["\"a\"".into(), " b".into()])
        );
        assert_eq!(
            parse_string_list("[a][b]"),
            Err("not a list: a `]` has no matching `[`".to_owned())
        );
    }

    #[test]
    fn tuple_lists_follow_cloud_hypervisor() {
        type Pairs = &'static [(u32, &'static [usize])];
        let ok: &[(&str, Pairs)] = &[
            ("[0@[0,2],1@[1,3]]", &[(0, &[0, 2]), (1, &[1, 3])]),
            ("[1@[1-3]]", &[(1, &[1, 2, 3])]),
            ("[ 0@[1] ,\t1@[2]]", &[(0, &[1]), (1, &[2])]),
            ("[\"0\"@[4]]", &[(0, &[4])]),
            ("[0@5]", &[(0, &[5])]),
        ];
        for (input, expected) in ok {
            let list = parse_tuple_list(input, MAX_INTEGER_LIST_LEN).expect(input);
            let got: Vec<(u32, &[usize])> = list.iter().map(|(v, l)| (*v, l.as_slice())).collect();
            assert_eq!(got, *expected, "{input}");
        }
        for (input, reason) in [
            (
                "0@[0-4]",
                "expected one pair of enclosing brackets: [<vcpu>@[<host cpus>],...]",
            ),
            ("[]", "`` is not <vcpu>@[<host cpus>]"),
            ("[0]", "`0` is not <vcpu>@[<host cpus>]"),
            ("[@[1]]", "`@[1]` has nothing before its `@`"),
            ("[0@1@[2]]", "`0@1@[2]` has more than one `@`"),
            (
                "[x@[1]]",
                "vCPU `x` is not an unsigned 32-bit integer (invalid digit found in string)",
            ),
            (
                "[0 @[1]]",
                "vCPU `0 ` is not an unsigned 32-bit integer (invalid digit found in string)",
            ),
            (
                "[0@ []]",
                "vCPU 0: `` is not an unsigned integer (cannot parse integer from empty string)",
            ),
            (
                "[0@[]]",
                "vCPU 0: `` is not an unsigned integer (cannot parse integer from empty string)",
            ),
            (
                "[0@\"[1]\"]",
                "vCPU 0: `\"[1]\"` is not an unsigned integer (invalid digit found in string)",
            ),
            ("[a]b[c]", "not a list: a `]` has no matching `[`"),
        ] {
            assert_eq!(
                parse_tuple_list(input, MAX_INTEGER_LIST_LEN),
                Err(reason.to_owned()),
                "{input}"
            );
        }
    }

    #[test]
    fn hostile_input_never_panics() {
        let pieces = [
            "",
            "=",
            ",",
            "[",
            "]",
            "\"",
            "@",
            "-",
            "size",
            "flag",
            "0",
            "18446744073709551616",
            "β",
            " ",
        ];
        let mut p = parser();
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let input = format!("{a}{b}{c}");
                    let _ = p.parse(&input);
                    let _ = parse_tuple_list(&input, 16);
                    let _ = parse_integer_list(&input, 16);
                    let _ = parse_string_list(&input);
                    let _ = dequote(&input);
                }
            }
        }
    }
}
