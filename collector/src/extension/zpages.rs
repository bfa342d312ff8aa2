//! `zpages`: status pages of the running collector, as otelcol's: `/debug/servicez` (a
//! summary), `/debug/pipelinez` (each pipeline and its components) and `/debug/extensionz`
//! (the running extensions).

use std::fmt::Write;
use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::Status;
use crate::config::{ComponentConfig, Config};
use crate::topology::Context;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZpagesConfig {
    /// `host:port` to serve on.
    pub endpoint: String,
}

impl Default for ZpagesConfig {
    fn default() -> Self {
        ZpagesConfig {
            endpoint: "localhost:55679".into(),
        }
    }
}

impl ComponentConfig for ZpagesConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        super::check_endpoint(&self.endpoint)
    }
}

pub(super) fn router(context: &Context) -> axum::Router {
    let page = |render: fn(&Status, &Config) -> String, status: Arc<Status>| {
        get(move || {
            let status = status.clone();
            async move { html(&status, render) }
        })
    };
    let status = &context.status;
    axum::Router::new()
        .route("/debug/servicez", page(servicez, status.clone()))
        .route("/debug/pipelinez", page(pipelinez, status.clone()))
        .route("/debug/extensionz", page(extensionz, status.clone()))
}

fn html(status: &Status, render: fn(&Status, &Config) -> String) -> Response {
    let Some(config) = status.config() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the collector is starting\n",
        )
            .into_response();
    };
    let body = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>odigos collector</title></head><body>\n\
         <p><a href=\"/debug/servicez\">service</a> · <a href=\"/debug/pipelinez\">pipelines</a> · \
         <a href=\"/debug/extensionz\">extensions</a></p>\n{}</body></html>\n",
        render(status, &config)
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn servicez(status: &Status, config: &Config) -> String {
    let mut out = String::from("<h1>Service</h1>\n<table>\n");
    let rows = [
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("start time", super::rfc3339(status.started)),
        (
            "ready",
            if status.ready() { "yes" } else { "no" }.to_string(),
        ),
        ("pipelines", config.pipelines.len().to_string()),
        ("extensions", config.extensions.len().to_string()),
    ];
    for (name, value) in rows {
        let _ = writeln!(out, "<tr><th>{name}</th><td>{}</td></tr>", escape(&value));
    }
    out.push_str("</table>\n");
    out
}

fn pipelinez(_: &Status, config: &Config) -> String {
    let mut out = String::from(
        "<h1>Pipelines</h1>\n<table border=\"1\">\n\
         <tr><th>pipeline</th><th>receivers</th><th>processors</th><th>exporters</th></tr>\n",
    );
    let list = |ids: &[crate::config::ComponentId]| {
        ids.iter()
            .map(|id| escape(id.as_str()))
            .collect::<Vec<_>>()
            .join(" → ")
    };
    for (id, pipeline) in &config.pipelines {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&id.id),
            list(&pipeline.receivers),
            list(&pipeline.processors),
            list(&pipeline.exporters)
        );
    }
    out.push_str("</table>\n");
    out
}

fn extensionz(status: &Status, _: &Config) -> String {
    let mut out = String::from(
        "<h1>Extensions</h1>\n<table border=\"1\">\n<tr><th>extension</th><th>serving on</th></tr>\n",
    );
    for (id, endpoint) in status.endpoints().iter() {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(id),
            escape(endpoint)
        );
    }
    out.push_str("</table>\n");
    out
}
