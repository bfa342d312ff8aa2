//! `routing`: sends each resource of a request to the pipelines of the routes it matches.
//!
//! The config has otelcol's shape: `table` entries with a `condition` (or a `statement` of the
//! form `route() where CONDITION`) and `pipelines`, `default_pipelines` for resources that match
//! no route, and `match_once` (default `true`: the first matching route only; `false`: every
//! matching route). Conditions are a subset of OTTL over the resource: `attributes["key"]` (or
//! `resource.attributes["key"]`), string, number, `true`/`false`/`nil` literals, `==`, `!=`,
//! `IsMatch(value, "regexp")`, `and`, `or`, `not` and parentheses.
//!
//! Requests are split without being decoded: only each resource's attributes are read.

use std::ops::Range;

use bytes::BytesMut;
use odigos_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use odigos_proto::otlp::resource::v1::Resource;
use odigos_proto::wire;
use prost::Message;
use regex::Regex;
use serde::Deserialize;

use super::Targets;
use crate::Batch;
use crate::config::ComponentConfig;
use crate::consumer::ConsumeError;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Pipelines for the resources that match no route.
    #[serde(default)]
    pub default_pipelines: Vec<String>,
    /// What to do when a condition cannot be evaluated; conditions here always evaluate, so
    /// `propagate`, `ignore` and `silent` behave alike.
    #[serde(default = "propagate")]
    pub error_mode: String,
    /// `true`: a resource goes to the first route it matches; `false`: to every one.
    #[serde(default = "yes")]
    pub match_once: bool,
    pub table: Vec<RouteConfig>,
}

fn propagate() -> String {
    "propagate".into()
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `route() where CONDITION`.
    pub statement: Option<String>,
    /// A condition over the resource.
    pub condition: Option<String>,
    /// Only `resource` is supported.
    #[serde(default = "resource")]
    pub context: String,
    pub pipelines: Vec<String>,
}

fn resource() -> String {
    "resource".into()
}

impl RouteConfig {
    fn condition(&self) -> Result<Expr, String> {
        let text = match (&self.statement, &self.condition) {
            (Some(statement), None) => statement
                .trim()
                .strip_prefix("route()")
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix("where"))
                .ok_or_else(|| {
                    format!("{statement:?} is not of the form route() where CONDITION")
                })?,
            (None, Some(condition)) => condition.as_str(),
            _ => return Err("give exactly one of statement and condition".into()),
        };
        parse(text)
    }
}

impl ComponentConfig for RoutingConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        if !["propagate", "ignore", "silent"].contains(&self.error_mode.as_str()) {
            problems.push((
                vec!["error_mode".into()],
                format!(
                    "unknown error mode {:?} (propagate, ignore, silent)",
                    self.error_mode
                ),
            ));
        }
        if self.table.is_empty() {
            problems.push((vec!["table".into()], "list at least one route".into()));
        }
        for (i, route) in self.table.iter().enumerate() {
            let at = |field: &str| vec!["table".to_string(), i.to_string(), field.to_string()];
            if route.context != "resource" {
                problems.push((
                    at("context"),
                    format!("context {:?} is not supported; use resource", route.context),
                ));
            }
            if route.pipelines.is_empty() {
                problems.push((at("pipelines"), "list at least one pipeline".into()));
            }
            if let Err(e) = route.condition() {
                let field = if route.statement.is_some() {
                    "statement"
                } else {
                    "condition"
                };
                problems.push((at(field), e));
            }
        }
        problems
    }
}

impl RoutingConfig {
    pub(super) fn named_pipelines(&self) -> Vec<(Vec<String>, &str)> {
        let defaults = self.default_pipelines.iter().enumerate().map(|(i, p)| {
            (
                vec!["default_pipelines".to_string(), i.to_string()],
                p.as_str(),
            )
        });
        let routes = self.table.iter().enumerate().flat_map(|(i, route)| {
            route.pipelines.iter().enumerate().map(move |(j, p)| {
                let at = vec![
                    "table".into(),
                    i.to_string(),
                    "pipelines".into(),
                    j.to_string(),
                ];
                (at, p.as_str())
            })
        });
        defaults.chain(routes).collect()
    }
}

/// A compiled routing table.
pub struct Router {
    routes: Vec<(Expr, Vec<String>)>,
    default: Vec<String>,
    match_once: bool,
}

impl Router {
    pub(super) fn new(config: &RoutingConfig) -> Router {
        Router {
            routes: config
                .table
                .iter()
                .map(|r| (r.condition().expect("validated"), r.pipelines.clone()))
                .collect(),
            default: config.default_pipelines.clone(),
            match_once: config.match_once,
        }
    }

    pub(super) fn route_pipelines(&self) -> impl Iterator<Item = &Vec<String>> {
        self.routes.iter().map(|(_, pipelines)| pipelines)
    }

    pub(super) fn default_pipelines(&self) -> &[String] {
        &self.default
    }

    /// Sends each resource of `batch` where its routes say; each part carries the acks of the
    /// data it holds.
    pub(super) async fn route(
        &self,
        mut batch: Batch,
        targets: &Targets,
    ) -> Result<(), ConsumeError> {
        let signal = batch.signal();
        batch.encode();
        let acks = batch.take_acks();
        let bytes = batch.to_bytes();
        // What each route takes, and the rest: resources, and the items they hold (counted
        // once, however many routes take a resource).
        let mut routed = vec![Part::default(); self.routes.len()];
        let mut unmatched = Part::default();
        for entry in wire::resource_entries(&bytes) {
            let start = entry.as_ptr() as usize - bytes.as_ptr() as usize;
            let range = start..start + entry.len();
            let items = wire::scan(signal, entry).map_or(0, |s| s.items);
            let attributes = resource_attributes(entry);
            let mut matched = false;
            for (i, (condition, _)) in self.routes.iter().enumerate() {
                if condition.holds(&attributes) {
                    routed[i].add(range.clone(), items);
                    matched = true;
                    if self.match_once {
                        break;
                    }
                }
            }
            if !matched {
                unmatched.add(range, items);
            }
        }
        let mut parts = Vec::new();
        for (part, next) in routed.iter().zip(&targets.routes) {
            parts.push((part, next[signal as usize].as_ref()));
        }
        parts.push((&unmatched, targets.default[signal as usize].as_ref()));
        let mut first_error = None;
        for (part, next) in parts {
            let Some(next) = next.filter(|_| !part.ranges.is_empty()) else {
                continue;
            };
            let mut joined = BytesMut::new();
            for range in &part.ranges {
                joined.extend_from_slice(&bytes[range.clone()]);
            }
            let part = Batch::trusted(signal, joined.freeze(), part.items)
                .with_acks(acks.gather(&part.ranges));
            if let Err(e) = next.consume(part).await {
                first_error.get_or_insert(e);
            }
        }
        // Handed on to the parts; resources no route and no default takes are dropped.
        acks.accept();
        first_error.map_or(Ok(()), Err)
    }
}

/// The resources a route takes from a request, as ranges of its encoding.
#[derive(Clone, Default)]
struct Part {
    ranges: Vec<Range<usize>>,
    items: usize,
}

impl Part {
    fn add(&mut self, range: Range<usize>, items: usize) {
        self.ranges.push(range);
        self.items += items;
    }
}

/// The attributes of the resource of one encoded `Resource*` entry, read without decoding the
/// rest of it.
fn resource_attributes(entry: &[u8]) -> Vec<KeyValue> {
    #[derive(Clone, PartialEq, Message)]
    struct Only {
        #[prost(message, optional, tag = "1")]
        resource: Option<Resource>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Entries {
        #[prost(message, repeated, tag = "1")]
        entries: Vec<Only>,
    }
    Entries::decode(entry)
        .ok()
        .and_then(|e| e.entries.into_iter().next()?.resource)
        .map(|r| r.attributes)
        .unwrap_or_default()
}

/// A condition over a resource's attributes.
#[derive(Debug)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Equal(Operand, Operand),
    Matches(Operand, Regex),
    Is(Operand),
}

#[derive(Debug)]
enum Operand {
    Attribute(String),
    Literal(Value),
}

#[derive(Debug, PartialEq)]
enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
    /// Arrays, maps and bytes: equal to nothing a condition can write.
    Other,
}

impl Operand {
    fn value(&self, attributes: &[KeyValue]) -> Value {
        match self {
            Operand::Literal(Value::Nil) => Value::Nil,
            Operand::Literal(Value::Bool(b)) => Value::Bool(*b),
            Operand::Literal(Value::Int(i)) => Value::Int(*i),
            Operand::Literal(Value::Double(d)) => Value::Double(*d),
            Operand::Literal(Value::Str(s)) => Value::Str(s.clone()),
            Operand::Literal(Value::Other) => Value::Other,
            Operand::Attribute(key) => attributes
                .iter()
                .find(|kv| kv.key == *key)
                .map_or(Value::Nil, |kv| from_any(kv.value.as_ref())),
        }
    }
}

fn from_any(value: Option<&AnyValue>) -> Value {
    match value.and_then(|v| v.value.as_ref()) {
        None => Value::Nil,
        Some(any_value::Value::StringValue(s)) => Value::Str(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::Double(*d),
        Some(_) => Value::Other,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(i), Value::Double(d)) | (Value::Double(d), Value::Int(i)) => *i as f64 == *d,
        (Value::Other, _) | (_, Value::Other) => false,
        _ => a == b,
    }
}

impl Expr {
    fn holds(&self, attributes: &[KeyValue]) -> bool {
        match self {
            Expr::Or(a, b) => a.holds(attributes) || b.holds(attributes),
            Expr::And(a, b) => a.holds(attributes) && b.holds(attributes),
            Expr::Not(e) => !e.holds(attributes),
            Expr::Equal(a, b) => equal(&a.value(attributes), &b.value(attributes)),
            Expr::Matches(a, re) => match a.value(attributes) {
                Value::Str(s) => re.is_match(&s),
                _ => false,
            },
            Expr::Is(a) => a.value(attributes) == Value::Bool(true),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Number(String),
    Punct(&'static str),
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, e)) => s.push(e),
                        None => return Err("unterminated string".into()),
                    },
                    Some((_, ch)) => s.push(ch),
                    None => return Err(format!("unterminated string at {at}")),
                }
            }
            out.push(Token::Str(s));
        } else if c.is_ascii_digit()
            || (c == '-' && text[at + 1..].starts_with(|d: char| d.is_ascii_digit()))
        {
            let mut n = String::new();
            while let Some(&(_, d)) = chars.peek() {
                if d.is_ascii_digit() || d == '.' || (d == '-' && n.is_empty()) {
                    n.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Token::Number(n));
        } else if c.is_alphabetic() || c == '_' {
            let mut w = String::new();
            while let Some(&(_, d)) = chars.peek() {
                if d.is_alphanumeric() || d == '_' || d == '.' {
                    w.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Token::Word(w));
        } else {
            let rest = &text[at..];
            let punct = ["==", "!=", "(", ")", "[", "]", ","]
                .into_iter()
                .find(|p| rest.starts_with(p))
                .ok_or_else(|| format!("unexpected {c:?} at {at}"))?;
            for _ in 0..punct.len() {
                chars.next();
            }
            out.push(Token::Punct(punct));
        }
    }
    Ok(out)
}

fn parse(text: &str) -> Result<Expr, String> {
    let mut parser = Parser {
        tokens: tokens(text)?,
        at: 0,
    };
    let expr = parser.or()?;
    match parser.tokens.get(parser.at) {
        None => Ok(expr),
        Some(token) => Err(format!("unexpected {token:?} after the condition")),
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn word(&mut self, word: &str) -> bool {
        let found = self.peek() == Some(&Token::Word(word.into()));
        self.at += usize::from(found);
        found
    }

    fn punct(&mut self, punct: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Punct(p)) if *p == punct);
        self.at += usize::from(found);
        found
    }

    fn expect(&mut self, punct: &str) -> Result<(), String> {
        if self.punct(punct) {
            Ok(())
        } else {
            Err(format!("expected {punct} but found {:?}", self.peek()))
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.word("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.word("and") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.word("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        if self.punct("(") {
            let inner = self.or()?;
            self.expect(")")?;
            return Ok(inner);
        }
        if self.word("IsMatch") {
            self.expect("(")?;
            let value = self.operand()?;
            self.expect(",")?;
            let Some(Token::Str(pattern)) = self.tokens.get(self.at).cloned() else {
                return Err("IsMatch takes a value and a \"regexp\"".into());
            };
            self.at += 1;
            self.expect(")")?;
            let re =
                Regex::new(&pattern).map_err(|e| format!("invalid regexp {pattern:?}: {e}"))?;
            return Ok(Expr::Matches(value, re));
        }
        let left = self.operand()?;
        if self.punct("==") {
            return Ok(Expr::Equal(left, self.operand()?));
        }
        if self.punct("!=") {
            return Ok(Expr::Not(Box::new(Expr::Equal(left, self.operand()?))));
        }
        Ok(Expr::Is(left))
    }

    fn operand(&mut self) -> Result<Operand, String> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        Ok(match token {
            Some(Token::Str(s)) => Operand::Literal(Value::Str(s)),
            Some(Token::Number(n)) => match n.parse::<i64>() {
                Ok(i) => Operand::Literal(Value::Int(i)),
                Err(_) => Operand::Literal(Value::Double(
                    n.parse().map_err(|_| format!("invalid number {n}"))?,
                )),
            },
            Some(Token::Word(w)) => match w.as_str() {
                "true" => Operand::Literal(Value::Bool(true)),
                "false" => Operand::Literal(Value::Bool(false)),
                "nil" => Operand::Literal(Value::Nil),
                "attributes" | "resource.attributes" => {
                    self.expect("[")?;
                    let Some(Token::Str(key)) = self.tokens.get(self.at).cloned() else {
                        return Err(format!("{w}[...] takes a \"key\""));
                    };
                    self.at += 1;
                    self.expect("]")?;
                    Operand::Attribute(key)
                }
                other => {
                    return Err(format!(
                        "unknown name {other:?}: use attributes[\"key\"], a literal or IsMatch"
                    ));
                }
            },
            other => return Err(format!("expected a value but found {other:?}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn holds(condition: &str, attributes: &[KeyValue]) -> bool {
        parse(condition).unwrap().holds(attributes)
    }

    #[test]
    fn conditions_over_resource_attributes() {
        let attributes = [
            kv(
                "service.name",
                any_value::Value::StringValue("orders".into()),
            ),
            kv("replicas", any_value::Value::IntValue(3)),
            kv("canary", any_value::Value::BoolValue(true)),
        ];
        let a = &attributes;
        assert!(holds(
            r#"resource.attributes["service.name"] == "orders""#,
            a
        ));
        assert!(holds(r#"attributes["service.name"] != "cart""#, a));
        assert!(holds(
            r#"attributes["replicas"] == 3 and attributes["canary"]"#,
            a
        ));
        assert!(holds(r#"attributes["missing"] == nil"#, a));
        assert!(holds(r#"IsMatch(attributes["service.name"], "^ord")"#, a));
        assert!(!holds(
            r#"not (attributes["service.name"] == "orders" or false)"#,
            a
        ));
        assert!(holds("true", a));
    }

    #[test]
    fn statements_and_errors() {
        let route = |statement: &str| RouteConfig {
            statement: Some(statement.into()),
            condition: None,
            context: "resource".into(),
            pipelines: vec!["traces/a".into()],
        };
        assert!(
            route(r#"route() where attributes["a"] == "b""#)
                .condition()
                .is_ok()
        );
        let error = route(r#"route() attributes["a"]"#).condition().unwrap_err();
        assert!(error.contains("route() where"), "{error}");
        let error = parse(r#"attributes["a"] === "b""#).unwrap_err();
        assert!(error.contains("unexpected"), "{error}");
        let error = parse(r#"span.name == "x""#).unwrap_err();
        assert!(error.contains("unknown name \"span.name\""), "{error}");
        let error = parse(r#"IsMatch(attributes["a"], "(")"#).unwrap_err();
        assert!(error.contains("invalid regexp"), "{error}");
    }
}
