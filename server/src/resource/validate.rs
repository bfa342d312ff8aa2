//! Checks on one resource by itself (cross-resource checks, like a Secret that must exist, are
//! the compiler's). Every problem is reported, each with the path of its field.

use crate::catalog::Catalog;

use super::{
    Action, Destination, InstrumentationRule, Object, Operation, Sampling, Signal, Source,
    SourceScopes, WorkloadKind,
};

/// A problem with one field: its path (`spec.data.FIELD`) and why.
pub type FieldError = (String, String);

/// Every problem with `object`.
pub fn validate(object: &Object, catalog: &Catalog) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name = object.name();
    let valid_name = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_name {
        errors.push((
            "metadata.name".into(),
            format!("{name:?} is not a valid name (lowercase letters, digits, '-' and '.')"),
        ));
    }
    match object {
        Object::Source(source) => check_source(source, &mut errors),
        Object::Destination(destination) => check_destination(destination, catalog, &mut errors),
        Object::Action(action) => check_action(action, &mut errors),
        Object::InstrumentationRule(rule) => check_rule(rule, &mut errors),
        Object::Sampling(sampling) => check_sampling(sampling, &mut errors),
        Object::Secret(_) => {}
    }
    errors
}

fn check_source(source: &Source, errors: &mut Vec<FieldError>) {
    let workload = &source.spec.workload;
    if workload.name.is_empty() {
        errors.push(("spec.workload.name".into(), "must not be empty".into()));
    }
    if source.spec.match_workload_name_as_regex
        && let Err(e) = regex::Regex::new(&workload.name)
    {
        errors.push(("spec.workload.name".into(), format!("bad regex: {e}")));
    }
    if workload.kind == WorkloadKind::Namespace {
        // As Odigos: these describe one workload, not a namespace.
        let spec = &source.spec;
        for (field, set) in [
            ("otelServiceName", spec.otel_service_name.is_some()),
            ("containerOverrides", !spec.container_overrides.is_empty()),
            (
                "matchWorkloadNameAsRegex",
                spec.match_workload_name_as_regex,
            ),
        ] {
            if set {
                errors.push((
                    format!("spec.{field}"),
                    "is not valid for a Namespace source".into(),
                ));
            }
        }
    }
    if workload.namespace.is_empty()
        && !matches!(
            workload.kind,
            WorkloadKind::Process | WorkloadKind::Namespace
        )
    {
        errors.push((
            "spec.workload.namespace".into(),
            format!("is required for a {:?}", workload.kind),
        ));
    }
}

fn check_destination(destination: &Destination, catalog: &Catalog, errors: &mut Vec<FieldError>) {
    let spec = &destination.spec;
    let Some(kind) = catalog.get(&spec.destination_type) else {
        let known: Vec<&str> = catalog.types().map(|t| t.name.as_str()).collect();
        errors.push((
            "spec.type".into(),
            format!(
                "unknown destination type {:?}; known types: {}",
                spec.destination_type,
                known.join(", ")
            ),
        ));
        return;
    };
    if spec.signals.is_empty() {
        errors.push(("spec.signals".into(), "name at least one signal".into()));
    }
    for (i, signal) in spec.signals.iter().enumerate() {
        if !kind.signals.contains(signal) {
            errors.push((
                format!("spec.signals.{i}"),
                format!("{} does not accept {signal:?}", kind.display_name),
            ));
        }
    }
    for (name, value) in &spec.data {
        match kind.field(name) {
            None => {
                let fields: Vec<&str> = kind.fields.iter().map(|f| f.name.as_str()).collect();
                errors.push((
                    format!("spec.data.{name}"),
                    format!(
                        "{} has no field {name}; its fields: {}",
                        kind.name,
                        fields.join(", ")
                    ),
                ));
            }
            // A secret's value never goes into a message: `check` does not show it.
            Some(field) => {
                if let Err(e) = field.check(value) {
                    errors.push((format!("spec.data.{name}"), e));
                }
            }
        }
    }
    for field in kind
        .fields
        .iter()
        .filter(|f| f.required && f.default.is_none())
    {
        // A secret may come from the Secret, which is checked when the state is compiled.
        let may_come =
            spec.data.contains_key(&field.name) || (field.secret && spec.secret_ref.is_some());
        if !may_come {
            let where_ = if field.secret {
                "in the Secret named by spec.secretRef (or in spec.data)"
            } else {
                "in spec.data"
            };
            errors.push((
                format!("spec.data.{}", field.name),
                format!("is required {where_}"),
            ));
        }
    }
}

fn check_action(action: &Action, errors: &mut Vec<FieldError>) {
    let spec = &action.spec;
    match spec.kinds().as_slice() {
        [] => errors.push((
            "spec".into(),
            "set one action: addClusterInfo, deleteAttribute, renameAttribute, piiMasking, k8sAttributes, urlTemplatization or spanRenamer".into(),
        )),
        [_] => {}
        many => errors.push((
            format!("spec.{}", many[1]),
            format!("an Action does one thing; this one sets {}", many.join(" and ")),
        )),
    }
    if spec.signals.is_empty() {
        errors.push(("spec.signals".into(), "name at least one signal".into()));
    }
    if let Some(rename) = &spec.rename_attribute {
        if rename.renames.is_empty() {
            errors.push(("spec.renameAttribute.renames".into(), "is empty".into()));
        }
        for (from, to) in &rename.renames {
            if from.is_empty() || to.is_empty() {
                errors.push((
                    format!("spec.renameAttribute.renames.{from}"),
                    "attribute names must not be empty".into(),
                ));
            }
        }
    }
    if let Some(delete) = &spec.delete_attribute
        && delete.attribute_names_to_delete.is_empty()
    {
        errors.push((
            "spec.deleteAttribute.attributeNamesToDelete".into(),
            "is empty".into(),
        ));
    }
    if let Some(info) = &spec.add_cluster_info
        && info.cluster_attributes.is_empty()
    {
        errors.push((
            "spec.addClusterInfo.clusterAttributes".into(),
            "is empty".into(),
        ));
    }
    if let Some(pii) = &spec.pii_masking {
        check_pii_masking(pii, errors);
    }
    if let Some(url) = &spec.url_templatization {
        for (g, group) in url.rules.iter().enumerate() {
            for (i, template) in group.templates.iter().enumerate() {
                if template.trim_matches('/').is_empty() {
                    errors.push((
                        format!("spec.urlTemplatization.rules.{g}.templates.{i}"),
                        format!("{template:?} is not a path rule (e.g. /users/{{id}})"),
                    ));
                }
            }
        }
    }
    if let Some(renamer) = &spec.span_renamer {
        for (field, value) in [
            ("programmingLanguage", &renamer.programming_language),
            ("scopeName", &renamer.scope_name),
        ] {
            if value.is_empty() {
                errors.push((
                    format!("spec.spanRenamer.{field}"),
                    "must not be empty".into(),
                ));
            }
        }
        for (i, r) in renamer.regex_replacements.iter().enumerate() {
            if let Err(e) = regex::Regex::new(&r.regex_pattern) {
                errors.push((
                    format!("spec.spanRenamer.regexReplacements.{i}.regexPattern"),
                    format!("bad regex: {e}"),
                ));
            }
        }
    }
    if let Some(k8s) = &spec.k8s_attributes {
        for (i, a) in k8s.annotations_attributes.iter().enumerate() {
            if let Some(from) = &a.from
                && !["pod", "namespace", "node"].contains(&from.as_str())
            {
                errors.push((
                    format!("spec.k8sAttributes.annotationsAttributes.{i}.from"),
                    format!("{from:?} is not pod, namespace or node"),
                ));
            }
        }
    }
    // These run on spans only, in Odigos as here.
    for (field, set) in [
        ("piiMasking", spec.pii_masking.is_some()),
        ("urlTemplatization", spec.url_templatization.is_some()),
        ("spanRenamer", spec.span_renamer.is_some()),
    ] {
        if set && spec.signals.iter().any(|s| *s != super::Signal::Traces) {
            errors.push((
                "spec.signals".into(),
                format!("{field} changes traces only: set signals to [TRACES]"),
            ));
        }
    }
}

fn check_pii_masking(pii: &super::PiiMasking, errors: &mut Vec<FieldError>) {
    if pii.pii_categories.is_empty()
        && pii.custom_format_maskings.is_empty()
        && pii.custom_regex_maskings.is_empty()
    {
        errors.push((
            "spec.piiMasking".into(),
            "name piiCategories, customFormatMaskings or customRegexMaskings".into(),
        ));
    }
    for (i, masking) in pii.custom_format_maskings.iter().enumerate() {
        if masking.lookup_key.is_empty() {
            errors.push((
                format!("spec.piiMasking.customFormatMaskings.{i}.lookupKey"),
                "must not be empty".into(),
            ));
        }
    }
    for (i, masking) in pii.custom_regex_maskings.iter().enumerate() {
        let field = format!("spec.piiMasking.customRegexMaskings.{i}.regex");
        match regex::Regex::new(&masking.regex) {
            Ok(re) if re.captures_len() < 2 => errors.push((
                field,
                "needs a capture group: the first group is what is masked".into(),
            )),
            Ok(_) => {}
            Err(e) => errors.push((field, format!("bad regex: {e}"))),
        }
    }
}

fn check_rule(rule: &InstrumentationRule, errors: &mut Vec<FieldError>) {
    if let Some(fallback) = &rule.spec.head_sampling_fallback_fraction
        && !(0.0..=1.0).contains(&fallback.fraction_to_keep)
    {
        errors.push((
            "spec.headSamplingFallbackFraction.fractionToKeep".into(),
            format!("{} is not between 0 and 1", fallback.fraction_to_keep),
        ));
    }
}

/// A rule's `sourceScopes` in the list form must not be empty items, which would match
/// everything by accident.
fn check_scopes(path: String, scopes: &SourceScopes, errors: &mut Vec<FieldError>) {
    if let SourceScopes::List(items) = scopes {
        for (i, item) in items.iter().enumerate() {
            if item == &Default::default() {
                errors.push((
                    format!("{path}.{i}"),
                    "an empty scope matches every source; remove it or name a workload, namespace or language".into(),
                ));
            }
        }
    }
}

fn check_sampling(sampling: &Sampling, errors: &mut Vec<FieldError>) {
    let spec = &sampling.spec;
    for (list, scopes) in spec
        .noisy_operations
        .iter()
        .map(|r| ("noisyOperations", &r.source_scopes))
        .enumerate()
        .chain(
            spec.highly_relevant_operations
                .iter()
                .map(|r| ("highlyRelevantOperations", &r.source_scopes))
                .enumerate(),
        )
        .chain(
            spec.cost_reduction_rules
                .iter()
                .map(|r| ("costReductionRules", &r.source_scopes))
                .enumerate(),
        )
        .map(|(i, (list, scopes))| (format!("spec.{list}.{i}.sourceScopes"), scopes))
    {
        check_scopes(list, scopes, errors);
    }
    let mut percentage = |path: String, value: Option<f64>| {
        if let Some(p) = value
            && !(0.0..=100.0).contains(&p)
        {
            errors.push((path, format!("{p} is not a percentage between 0 and 100")));
        }
    };
    for (i, rule) in spec.noisy_operations.iter().enumerate() {
        percentage(
            format!("spec.noisyOperations.{i}.percentageAtMost"),
            rule.percentage_at_most,
        );
    }
    for (i, rule) in spec.highly_relevant_operations.iter().enumerate() {
        percentage(
            format!("spec.highlyRelevantOperations.{i}.percentageAtLeast"),
            rule.percentage_at_least,
        );
    }
    for (i, rule) in spec.cost_reduction_rules.iter().enumerate() {
        percentage(
            format!("spec.costReductionRules.{i}.percentageAtMost"),
            Some(rule.percentage_at_most),
        );
    }
}

/// The fields `object` sets that are accepted, as Odigos defines them, but have no effect
/// here yet, each with its path and why: what the status shows so that nothing reads as in
/// force that is not.
pub fn not_honoured(object: &Object, catalog: &Catalog) -> Vec<FieldError> {
    fn push(found: &mut Vec<FieldError>, path: String, why: &str) {
        found.push((path, why.to_string()));
    }
    let mut found = Vec::new();
    match object {
        Object::Source(source) => {
            for (i, c) in source.spec.container_overrides.iter().enumerate() {
                if c.allow_concurrent_agents.is_some() {
                    push(
                        &mut found,
                        format!("spec.containerOverrides.{i}.allowConcurrentAgents"),
                        "nothing detects other agents in a container yet",
                    );
                }
            }
        }
        Object::Destination(destination) => {
            let spec = &destination.spec;
            if spec.signals.contains(&Signal::Profiles) {
                push(
                    &mut found,
                    "spec.signals".into(),
                    "PROFILES: no profiles pipeline runs yet; this destination receives no profiles",
                );
            }
            if let Some(kind) = catalog.get(&spec.destination_type) {
                for (name, why) in kind.ignored(&spec.data) {
                    push(&mut found, format!("spec.data.{name}"), why);
                }
            }
        }
        Object::InstrumentationRule(rule) => {
            let spec = &rule.spec;
            let agentless = "no agent here acts on it yet";
            for (field, set, why) in [
                (
                    "instrumentationLibraries",
                    spec.instrumentation_libraries.is_some(),
                    "agent settings apply per workload, to every library",
                ),
                ("otelDistros", spec.otel_distros.is_some(), agentless),
                ("codeAttributes", spec.code_attributes.is_some(), agentless),
                (
                    "customInstrumentations",
                    spec.custom_instrumentations.is_some(),
                    agentless,
                ),
                ("ebpfLogCapture", spec.ebpf_log_capture.is_some(), agentless),
                ("networkMetrics", spec.network_metrics.is_some(), agentless),
                ("traceVerbosity", spec.trace_verbosity.is_some(), agentless),
                (
                    "agentDiagnostics",
                    spec.agent_diagnostics.is_some(),
                    agentless,
                ),
                (
                    "payloadCollection.messaging",
                    spec.payload_collection
                        .as_ref()
                        .is_some_and(|p| p.messaging.is_some()),
                    agentless,
                ),
                (
                    "payloadCollection.dbQuery.sanitizationPolicy",
                    spec.payload_collection
                        .as_ref()
                        .and_then(|p| p.db_query.as_ref())
                        .is_some_and(|d| d.sanitization_policy.is_some()),
                    agentless,
                ),
            ] {
                if set {
                    push(&mut found, format!("spec.{field}"), why);
                }
            }
        }
        Object::Sampling(sampling) => {
            let spec = &sampling.spec;
            let operation = |found: &mut Vec<FieldError>,
                             path: String,
                             op: &Option<Operation>,
                             noisy: bool| {
                let mut note = |path: String, why: &str| found.push((path, why.to_string()));
                let Some(op) = op else { return };
                let server = op.http_server.as_ref();
                let others = op.http_client.is_some()
                    || op.grpc_server.is_some()
                    || op.grpc_client.is_some()
                    || op.kafka_consumer.is_some()
                    || op.kafka_producer.is_some();
                if others {
                    note(
                        format!("{path}.operation"),
                        "only httpServer routes are matched yet; this rule matches nothing",
                    );
                }
                if let Some(server) = server {
                    if server.route.is_none() {
                        note(
                            format!("{path}.operation.httpServer"),
                            "only an exact route is matched yet (not routePrefix); this rule matches nothing",
                        );
                    } else if server.route_prefix.is_some() || !server.query_params.is_empty() {
                        note(
                            format!("{path}.operation.httpServer"),
                            "routePrefix and queryParams are not matched yet; the route alone decides",
                        );
                    }
                    if !noisy && server.method.is_some() {
                        note(
                            format!("{path}.operation.httpServer.method"),
                            "the method is not matched in tail sampling yet; the route alone decides",
                        );
                    }
                }
            };
            for (i, r) in spec.noisy_operations.iter().enumerate() {
                operation(
                    &mut found,
                    format!("spec.noisyOperations.{i}"),
                    &r.operation,
                    true,
                );
                if r.percentage_at_most.is_some_and(|p| p > 0.0) {
                    found.push((
                        format!("spec.noisyOperations.{i}.percentageAtMost"),
                        "only dropping all (0) is applied yet; a share above 0 keeps everything"
                            .into(),
                    ));
                }
            }
            for (i, r) in spec.highly_relevant_operations.iter().enumerate() {
                operation(
                    &mut found,
                    format!("spec.highlyRelevantOperations.{i}"),
                    &r.operation,
                    false,
                );
            }
            for (i, r) in spec.cost_reduction_rules.iter().enumerate() {
                if r.operation.is_some() {
                    found.push((
                        format!("spec.costReductionRules.{i}.operation"),
                        "cost reduction applies to all of a source's traces; the operation is not matched yet".into(),
                    ));
                }
            }
        }
        Object::Action(action) => {
            if let Some(k8s) = &action.spec.k8s_attributes {
                use super::K8sAttributeSource::Node;
                if k8s.collect_workload_uid {
                    push(
                        &mut found,
                        "spec.k8sAttributes.collectWorkloadUID".into(),
                        "only the ReplicaSet's uid is added yet (k8s.replicaset.uid)",
                    );
                }
                let labels = k8s
                    .labels_attributes
                    .iter()
                    .map(|l| l.from == Some(Node) || l.from_sources.contains(&Node));
                let annotations = k8s
                    .annotations_attributes
                    .iter()
                    .map(|a| a.from.as_deref() == Some("node") || a.from_sources.contains(&Node));
                for (list, from_node) in [
                    ("labelsAttributes", labels.collect::<Vec<_>>()),
                    ("annotationsAttributes", annotations.collect()),
                ] {
                    for (i, _) in from_node.iter().enumerate().filter(|(_, n)| **n) {
                        push(
                            &mut found,
                            format!("spec.k8sAttributes.{list}.{i}"),
                            "the node's labels and annotations are not read yet",
                        );
                    }
                }
            }
        }
        Object::Secret(_) => {}
    }
    found
}
