//! The `.properties` file of `--kafka-properties-file`: the form Kafka's own clients read their
//! configuration from, and the way a Kubernetes secret is usually mounted.
//!
//! Deliberately the plain subset: `key=value` per line, `#` or `!` at the start of a comment
//! line, blank lines skipped. A value is taken verbatim to the end of its line and trimmed; the
//! backslash escapes and continuation lines of Java's format are not interpreted, so a
//! password is never altered on its way to librdkafka.

/// A file line's number (from 1) and what is wrong with it; never a value.
pub(super) type LineError = (usize, String);

/// Each property with its line number, in file order. A line without `=`, an empty key, or a
/// key given twice is an error naming the line.
pub(super) fn parse_properties_file(text: &str) -> Result<Vec<(usize, String, String)>, LineError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut properties: Vec<(usize, String, String)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err((number, "not key=value".to_owned()));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err((number, "the key before `=` is empty".to_owned()));
        }
        if let Some((first, ..)) = properties.iter().find(|(_, known, _)| known == key) {
            return Err((number, format!("'{key}' is already set on line {first}")));
        }
        properties.push((number, key.to_owned(), value.trim().to_owned()));
    }
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<(usize, String, String)> {
        parse_properties_file(text).expect("parses")
    }

    #[test]
    fn reads_key_value_lines_and_skips_comments_and_blanks() {
        let text = "\u{feff}# cluster credentials\n\
                    ! also a comment\n\
                    \n\
                    security.protocol=SASL_SSL\r\n\
                    \x20 sasl.username = svc-ackgate \n\
                    sasl.password=p#ss=w0rd,!x \\n\\\n\
                    client.id=\n";
        assert_eq!(
            parsed(text),
            vec![
                (4, "security.protocol".into(), "SASL_SSL".into()),
                (5, "sasl.username".into(), "svc-ackgate".into()),
                // Verbatim: `#`, `!`, `=`, commas and backslashes are the value's own.
                (6, "sasl.password".into(), "p#ss=w0rd,!x \\n\\".into()),
                (7, "client.id".into(), String::new()),
            ]
        );
        assert_eq!(parsed(""), vec![]);
        assert_eq!(parsed("# only a comment"), vec![]);
    }

    #[test]
    fn names_the_line_and_never_the_value() {
        for (text, line, why) in [
            ("a=1\nhunter2\n", 2, "not key=value"),
            ("\n =hunter2", 2, "the key before `=` is empty"),
            ("a=1\nb=2\na=hunter2", 3, "'a' is already set on line 1"),
        ] {
            let (number, error) = parse_properties_file(text).unwrap_err();
            assert_eq!((number, error.as_str()), (line, why), "{text:?}");
            assert!(!error.contains("hunter2"));
        }
    }
}
