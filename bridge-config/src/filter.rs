//! The bridge's filter: a small subset of CEL over a message's key and headers, parsed once when
//! the config is loaded and evaluated for every message. Messages it does not match are
//! acknowledged at the source without being sent.
//!
//! ```text
//! headers['region'] == 'eu' && !has(headers['test'])
//! key.startsWith('order-') || headers['priority'] in ['high', 'urgent']
//! ```
//!
//! Grammar (precedence from loose to tight):
//!
//! ```text
//! expr   := and ('||' and)*
//! and    := unary ('&&' unary)*
//! unary  := '!' unary | atom
//! atom   := '(' expr ')' | 'true' | 'false' | 'has(' field ')'
//!         | value ('==' | '!=') value | value 'in' '[' string (',' string)* ']'
//!         | value '.' ('startsWith' | 'endsWith' | 'contains') '(' string ')'
//! value  := field | string
//! field  := 'key' | 'headers' '[' string ']'
//! ```
//!
//! A header that is absent (or a message without a key) equals no string, so `==`, `in` and the
//! string functions are false for it and `!=` is true; `has()` asks for presence. A repeated header
//! is compared by its first value.
//!
//! It lives with the config so that the operator refuses a bad expression when the Bridge is
//! applied, with the same parser the worker runs.

/// What a filter reads from a message: its key and its headers.
pub trait Fields {
    fn key(&self) -> Option<&[u8]>;
    /// The first value of header `name`, if the message has one.
    fn header(&self, name: &str) -> Option<&[u8]>;
}

/// A parsed filter expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    Const(bool),
    Not(Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Has(Field),
    Equals(Value, Value),
    In(Value, Vec<String>),
    Text(Value, TextTest, String),
}

/// What a filter reads from a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    Key,
    Header(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Field(Field),
    Literal(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextTest {
    StartsWith,
    EndsWith,
    Contains,
}

/// A syntax error with the 1-based column where it was found.
#[derive(Debug, PartialEq, Eq)]
pub struct FilterError {
    pub column: usize,
    pub problem: String,
}

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at column {}: {}", self.column, self.problem)
    }
}

/// Deepest nesting of parentheses and `!`: keeps a hostile expression from exhausting the stack.
const MAX_DEPTH: usize = 64;

impl Filter {
    /// Parses an expression of the grammar above.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let mut parser = Parser { tokens: tokenize(text)?, at: 0, depth: 0, end: text.chars().count() + 1 };
        let filter = parser.expr()?;
        match parser.peek() {
            None => Ok(filter),
            Some((column, token)) => Err(FilterError { column, problem: format!("unexpected {}", token.describe()) }),
        }
    }

    /// Whether `message` passes.
    #[must_use]
    pub fn matches(&self, message: &impl Fields) -> bool {
        match self {
            Filter::Const(value) => *value,
            Filter::Not(inner) => !inner.matches(message),
            Filter::And(left, right) => left.matches(message) && right.matches(message),
            Filter::Or(left, right) => left.matches(message) || right.matches(message),
            Filter::Has(field) => read(field, message).is_some(),
            Filter::Equals(left, right) => match (resolve(left, message), resolve(right, message)) {
                (Some(left), Some(right)) => left == right,
                // Absent equals nothing, not even another absent value.
                _ => false,
            },
            Filter::In(value, options) => {
                resolve(value, message).is_some_and(|v| options.iter().any(|o| o.as_bytes() == v))
            }
            Filter::Text(value, test, needle) => resolve(value, message).is_some_and(|v| {
                let needle = needle.as_bytes();
                match test {
                    TextTest::StartsWith => v.starts_with(needle),
                    TextTest::EndsWith => v.ends_with(needle),
                    TextTest::Contains => needle.is_empty() || v.windows(needle.len()).any(|w| w == needle),
                }
            }),
        }
    }
}

fn read<'m>(field: &Field, message: &'m impl Fields) -> Option<&'m [u8]> {
    match field {
        Field::Key => message.key(),
        Field::Header(name) => message.header(name),
    }
}

fn resolve<'m>(value: &'m Value, message: &'m impl Fields) -> Option<&'m [u8]> {
    match value {
        Value::Field(field) => read(field, message),
        Value::Literal(text) => Some(text.as_bytes()),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Str(String),
    Symbol(&'static str),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(name) => format!("'{name}'"),
            Token::Str(text) => format!("string '{text}'"),
            Token::Symbol(symbol) => format!("'{symbol}'"),
        }
    }
}

/// Two-character symbols first, so that `!=` is not read as `!` then `=`.
const SYMBOLS: [&str; 11] = ["==", "!=", "&&", "||", "!", "(", ")", "[", "]", ",", "."];

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let column = i + 1;
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let (value, next) = string_literal(&chars, i)?;
            tokens.push((column, Token::Str(value)));
            i = next;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push((column, Token::Ident(chars[start..i].iter().collect())));
        } else {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let symbol = SYMBOLS
                .iter()
                .find(|s| s.len() == 2 && two == **s)
                .or_else(|| SYMBOLS.iter().find(|s| s.len() == 1 && s.starts_with(c)))
                .ok_or_else(|| FilterError { column, problem: format!("unexpected character '{c}'") })?;
            tokens.push((column, Token::Symbol(symbol)));
            i += symbol.len();
        }
    }
    Ok(tokens)
}

/// A quoted string starting at `open`; backslash escapes the next character.
fn string_literal(chars: &[char], open: usize) -> Result<(String, usize), FilterError> {
    let quote = chars[open];
    let mut value = String::new();
    let mut i = open + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                value.push(match chars[i + 1] {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
                i += 2;
            }
            c if c == quote => return Ok((value, i + 1)),
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    Err(FilterError { column: open + 1, problem: format!("string not closed; add the closing {quote}") })
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    depth: usize,
    /// Column just past the end, for "expected ... at the end" errors.
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<(usize, &Token)> {
        self.tokens.get(self.at).map(|(column, token)| (*column, token))
    }

    fn column(&self) -> usize {
        self.peek().map_or(self.end, |(column, _)| column)
    }

    fn error<T>(&self, problem: impl Into<String>) -> Result<T, FilterError> {
        Err(FilterError { column: self.column(), problem: problem.into() })
    }

    fn take_symbol(&mut self, symbol: &str) -> bool {
        if matches!(self.peek(), Some((_, Token::Symbol(s))) if *s == symbol) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<(), FilterError> {
        if self.take_symbol(symbol) { Ok(()) } else { self.error(format!("expected '{symbol}'")) }
    }

    fn take_ident(&mut self, name: &str) -> bool {
        if matches!(self.peek(), Some((_, Token::Ident(i))) if i == name) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn string(&mut self) -> Result<String, FilterError> {
        if let Some((_, Token::Str(text))) = self.peek() {
            let text = text.clone();
            self.at += 1;
            Ok(text)
        } else {
            self.error("expected a quoted string")
        }
    }

    fn nested<T>(&mut self, parse: impl FnOnce(&mut Self) -> Result<T, FilterError>) -> Result<T, FilterError> {
        if self.depth >= MAX_DEPTH {
            return self.error(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    fn expr(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        while self.take_symbol("||") {
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.unary()?;
        while self.take_symbol("&&") {
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        if self.take_symbol("!") {
            return self.nested(|p| Ok(Filter::Not(Box::new(p.unary()?))));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Filter, FilterError> {
        if self.take_symbol("(") {
            let inner = self.nested(Self::expr)?;
            self.expect_symbol(")")?;
            return Ok(inner);
        }
        if self.take_ident("true") {
            return Ok(Filter::Const(true));
        }
        if self.take_ident("false") {
            return Ok(Filter::Const(false));
        }
        if self.take_ident("has") {
            self.expect_symbol("(")?;
            let field = self.field()?.ok_or_else(|| FilterError {
                column: self.column(),
                problem: "has() takes key or headers['name']".into(),
            })?;
            self.expect_symbol(")")?;
            return Ok(Filter::Has(field));
        }
        let left = self.value()?;
        if self.take_symbol("==") {
            return Ok(Filter::Equals(left, self.value()?));
        }
        if self.take_symbol("!=") {
            return Ok(Filter::Not(Box::new(Filter::Equals(left, self.value()?))));
        }
        if self.take_ident("in") {
            self.expect_symbol("[")?;
            let mut options = vec![self.string()?];
            while self.take_symbol(",") {
                options.push(self.string()?);
            }
            self.expect_symbol("]")?;
            return Ok(Filter::In(left, options));
        }
        if self.take_symbol(".") {
            let test = if self.take_ident("startsWith") {
                TextTest::StartsWith
            } else if self.take_ident("endsWith") {
                TextTest::EndsWith
            } else if self.take_ident("contains") {
                TextTest::Contains
            } else {
                return self.error("expected startsWith, endsWith or contains");
            };
            self.expect_symbol("(")?;
            let needle = self.string()?;
            self.expect_symbol(")")?;
            return Ok(Filter::Text(left, test, needle));
        }
        self.error("expected ==, !=, in or a string function after the value")
    }

    fn value(&mut self) -> Result<Value, FilterError> {
        if let Some(field) = self.field()? {
            return Ok(Value::Field(field));
        }
        if let Some((_, Token::Str(_))) = self.peek() {
            return Ok(Value::Literal(self.string()?));
        }
        self.error("expected key, headers['name'] or a quoted string")
    }

    fn field(&mut self) -> Result<Option<Field>, FilterError> {
        if self.take_ident("key") {
            return Ok(Some(Field::Key));
        }
        if self.take_ident("headers") {
            self.expect_symbol("[")?;
            let name = self.string()?;
            self.expect_symbol("]")?;
            return Ok(Some(Field::Header(name)));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A message as the filter sees it.
    #[derive(Default)]
    struct Sample {
        key: Option<Vec<u8>>,
        headers: Vec<(String, Vec<u8>)>,
    }

    impl Fields for Sample {
        fn key(&self) -> Option<&[u8]> {
            self.key.as_deref()
        }

        fn header(&self, name: &str) -> Option<&[u8]> {
            self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
        }
    }

    fn message(key: Option<&str>, headers: &[(&str, &str)]) -> Sample {
        Sample {
            key: key.map(|k| k.as_bytes().to_vec()),
            headers: headers.iter().map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec())).collect(),
        }
    }

    fn check(expression: &str, message: &Sample) -> bool {
        Filter::parse(expression).unwrap_or_else(|e| panic!("{expression}: {e}")).matches(message)
    }

    #[test]
    fn header_equality_and_its_negation() {
        let eu = message(None, &[("region", "eu")]);
        let us = message(None, &[("region", "us")]);
        assert!(check("headers['region'] == 'eu'", &eu));
        assert!(!check("headers['region'] == 'eu'", &us));
        assert!(check(r#"headers["region"] != "eu""#, &us));
    }

    #[test]
    fn an_absent_header_equals_nothing_and_has_tells_presence() {
        let bare = message(None, &[]);
        assert!(!check("headers['region'] == 'eu'", &bare));
        assert!(check("headers['region'] != 'eu'", &bare));
        assert!(!check("has(headers['region'])", &bare));
        assert!(!check("key == ''", &bare));
        assert!(check("has(key)", &message(Some(""), &[])));
    }

    #[test]
    fn boolean_operators_follow_precedence_and_parentheses() {
        let m = message(Some("order-7"), &[("priority", "high"), ("test", "1")]);
        assert!(check("key.startsWith('order-') && headers['priority'] in ['high', 'urgent']", &m));
        assert!(!check("!has(headers['test']) && key.endsWith('7')", &m));
        // && binds tighter than ||.
        assert!(check("true || false && false", &m));
        assert!(!check("(true || false) && false", &m));
        assert!(check("key.contains('der') && !!true", &m));
    }

    #[test]
    fn repeated_headers_compare_by_the_first_value() {
        let m = message(None, &[("tag", "a"), ("tag", "b")]);
        assert!(check("headers['tag'] == 'a'", &m));
        assert!(!check("headers['tag'] == 'b'", &m));
    }

    #[test]
    fn errors_say_where_and_what_is_expected() {
        let error = |text: &str| Filter::parse(text).expect_err(text).to_string();
        assert_eq!(error("headers['region'] = 'eu'"), "at column 19: unexpected character '='");
        assert_eq!(
            error("headers['region']"),
            "at column 18: expected ==, !=, in or a string function after the value"
        );
        assert_eq!(error("headers[region] == 'x'"), "at column 9: expected a quoted string");
        assert_eq!(error("key == 'open"), "at column 8: string not closed; add the closing '");
        assert_eq!(error("(key == 'a'"), "at column 12: expected ')'");
        assert_eq!(error("key == 'a' key"), "at column 12: unexpected 'key'");
        assert_eq!(error("key.matches('a')"), "at column 5: expected startsWith, endsWith or contains");
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!("{}true{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(Filter::parse(&deep).expect_err("too deep").problem.contains("nested deeper"));
        let negations = format!("{}true", "!".repeat(10_000));
        assert!(Filter::parse(&negations).is_err());
    }

    proptest! {
        // Fuzz: any text either parses or fails with a column inside (or just past) the text.
        #[test]
        fn any_text_parses_or_fails_with_a_column_in_range(text in ".{0,80}") {
            match Filter::parse(&text) {
                Ok(filter) => { let _ = filter.matches(&Sample::default()); }
                Err(error) => prop_assert!((1..=text.chars().count() + 1).contains(&error.column), "{error}"),
            }
        }

        // Fuzz with the grammar's own tokens, which reaches far more of the parser than random text.
        #[test]
        fn token_soup_never_panics(parts in proptest::collection::vec(prop_oneof![
            Just("key"), Just("headers"), Just("['a']"), Just("'x'"), Just("=="), Just("!="), Just("&&"),
            Just("||"), Just("!"), Just("("), Just(")"), Just("in"), Just("['x','y']"), Just(".startsWith('k')"),
            Just("has("), Just("true"), Just(","),
        ], 0..24)) {
            let text = parts.join(" ");
            if let Ok(filter) = Filter::parse(&text) {
                let _ = filter.matches(&message(Some("k1"), &[("a", "x")]));
            }
        }

        // A parsed equality on a header matches exactly the messages that carry that value.
        #[test]
        fn header_equality_matches_exactly_that_value(name in "[a-z]{1,8}", want in "[ -~&&[^'\\\\]]{0,12}", have in "[ -~]{0,12}") {
            let filter = Filter::parse(&format!("headers['{name}'] == '{want}'")).expect("valid");
            prop_assert_eq!(filter.matches(&message(None, &[(&name, &have)])), want == have);
        }
    }
}
