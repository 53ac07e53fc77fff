//! The spec wagate publishes: poem-openapi's document, refined where poem-openapi cannot say
//! what the API does, so that SDK generators and schema checkers are told the truth.
//!
//! - A field whose type is an enum or object is a plain `$ref` (poem-openapi wraps a described
//!   reference in `allOf`, which generators read as a new, broken type).
//! - Every field sent as `null` says so: an optional field of an answer or event is always
//!   present and `nullable`; an optional field of a request may be left out or be `null`.
//! - Each operation lists only the error statuses it can answer, with what they mean there
//!   (`ERRORS` next to each module's handlers), in the error envelope; public operations say
//!   `security: []`; parameters carry examples.
//! - A union of events names its discriminator, so generators make a tagged union.

use serde_json::{Map, Value, json};
use wagate_core::domain::DeviceId;

/// The error answers of one operation, besides those its kind always has: 401 when it needs
/// credentials, 413 and 415 when it takes a body, and 500 unless it is listed in `INFALLIBLE`.
pub(crate) struct OperationErrors {
    /// Its `operationId`.
    pub operation: &'static str,
    /// Status and what it means for this operation, codes first; in groups, so answers that
    /// several operations share are written once.
    pub answers: &'static [&'static [(u16, &'static str)]],
}

/// Operations that cannot fail inside the gateway (readiness says a failure as 503).
const INFALLIBLE: [&str; 2] = ["health", "ready"];

/// An example for every parameter, by name: the values the login endpoints' documentation uses.
const PARAMETER_EXAMPLES: [(&str, &str); 15] = [
    ("device_id", "\"my-device-id\""),
    ("phone", "\"628912344551\""),
    ("id", "\"0b6f6f2e-5c1e-4c1a-9d8e-2f1b5a7c9d30\""),
    ("delivery_id", "\"7c9e6679-7425-40de-944b-e07fc1f90ae7\""),
    (
        "file_name",
        "\"scan-qr-b0b7bb43-9a22-455a-814f-5a225c743310.png\"",
    ),
    ("status", "\"delivered\""),
    ("limit", "50"),
    ("before", "\"7c9e6679-7425-40de-944b-e07fc1f90ae7\""),
    ("tenant_id", "\"3f2a8c1e-9b4d-4e7a-8c21-5d6e7f809a1b\""),
    ("username", "\"wg_4Jc1aZ0qL8sVt2Xy\""),
    ("Last-Event-ID", "\"0b6f6f2e-5c1e-4c1a-9d8e-2f1b5a7c9d31\""),
    ("last_event_id", "\"0b6f6f2e-5c1e-4c1a-9d8e-2f1b5a7c9d31\""),
    ("types", "[\"logged_in\", \"login_failed\"]"),
    ("device_ids", "[\"my-device-id\"]"),
    ("token", "\"3q2-7wX9kL0mN1pQ4rS5tU6vW7xY8zA9bC0dE1fG2hI\""),
];

const ERROR_SCHEMA: &str = "#/components/schemas/ErrorEnvelope";
/// The media type of every JSON answer, as poem-openapi sends it.
const JSON: &str = "application/json; charset=utf-8";

/// Refines poem-openapi's document (JSON) into the published one.
///
/// # Panics
///
/// When an operation has no `ERRORS` entry or a parameter no example: both are caught by the
/// spec test the moment an operation is added.
pub(crate) fn refine(raw: &str, errors: &[&[OperationErrors]]) -> Value {
    let mut spec: Value = serde_json::from_str(raw).expect("poem-openapi writes JSON");
    plain_references(&mut spec);
    let requests = request_schemas(&spec);
    if let Some(schemas) = spec["components"]["schemas"].as_object_mut() {
        for (name, schema) in schemas.iter_mut() {
            declare_nulls(name, schema, requests.contains(name));
            if requests.contains(name) {
                state_device_id_rule(schema);
            }
        }
        flatten_tagged_unions(schemas);
    }
    let paths = spec["paths"].as_object_mut().expect("the spec has paths");
    for item in paths.values_mut() {
        for operation in item
            .as_object_mut()
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            refine_operation(operation, errors);
        }
    }
    spec
}

/// `{allOf: [{$ref}, {description}]}` → `{$ref}`: a reference stays a reference.
fn plain_references(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(reference) = lone_reference(map) {
                *value = json!({ "$ref": reference });
                return;
            }
            map.values_mut().for_each(plain_references);
        }
        Value::Array(items) => items.iter_mut().for_each(plain_references),
        _ => {}
    }
}

/// The reference of an `allOf` that only adds annotations to one `$ref`.
fn lone_reference(map: &Map<String, Value>) -> Option<String> {
    const ANNOTATIONS: [&str; 4] = ["description", "title", "example", "readOnly"];
    let parts = map.get("allOf")?.as_array()?;
    let mut references = parts.iter().filter_map(|p| p.get("$ref"));
    let reference = references.next()?.as_str()?.to_string();
    let only_annotations = |v: &Value| {
        v.as_object()
            .is_some_and(|o| o.keys().all(|k| ANNOTATIONS.contains(&k.as_str())))
    };
    let rest_is_annotation = parts
        .iter()
        .filter(|p| p.get("$ref").is_none())
        .all(only_annotations);
    let siblings_are_annotations = map
        .iter()
        .filter(|(k, _)| *k != "allOf")
        .all(|(k, _)| ANNOTATIONS.contains(&k.as_str()));
    (references.next().is_none() && rest_is_annotation && siblings_are_annotations)
        .then_some(reference)
}

/// The names of the schemas a request body or parameter uses, directly or nested.
fn request_schemas(spec: &Value) -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    let mut pending: Vec<&Value> = Vec::new();
    for item in spec["paths"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for operation in item.as_object().into_iter().flat_map(|m| m.values()) {
            pending.push(&operation["requestBody"]);
            pending.push(&operation["parameters"]);
        }
    }
    while let Some(value) = pending.pop() {
        match value {
            Value::Object(map) => {
                if let Some(name) = map
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    && found.insert(name.to_string())
                {
                    pending.push(&spec["components"]["schemas"][name]);
                }
                pending.extend(map.values());
            }
            Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    found
}

/// Marks every optional property `nullable`; in an answer it is also `required`, because the
/// gateway always sends it (as `null` when it has no value). A request schema says it takes no
/// other fields.
fn declare_nulls(name: &str, schema: &mut Value, is_request: bool) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<Value> = schema["required"].as_array().cloned().unwrap_or_default();
    let optional: Vec<String> = properties
        .keys()
        .filter(|k| !required.iter().any(|r| r == *k))
        .cloned()
        .collect();
    for field in &optional {
        let property = &mut schema["properties"][field];
        assert!(
            property.get("$ref").is_none(),
            "{name}.{field} is an optional reference, which OpenAPI 3.0 cannot mark nullable"
        );
        property["nullable"] = Value::Bool(true);
    }
    if is_request {
        // Request bodies refuse unknown fields (`deny_unknown_fields` on each of them).
        schema["additionalProperties"] = Value::Bool(false);
    } else if !optional.is_empty() {
        let mut all = required;
        all.extend(optional.into_iter().map(Value::String));
        schema["required"] = Value::Array(all);
    }
}

/// A device id in a request body follows `DeviceId::PATTERN`; the handlers check it with
/// `DeviceId::parse` (one rule, one owner), so the spec states it here. In a path it is a
/// `DevicePath`, whose schema states it.
fn state_device_id_rule(schema: &mut Value) {
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(id) = properties.get_mut("device_id") {
        id["pattern"] = Value::from(DeviceId::PATTERN);
    }
    if let Some(items) = properties
        .get_mut("device_ids")
        .and_then(|p| p.get_mut("items"))
    {
        items["pattern"] = Value::from(DeviceId::PATTERN);
    }
}

/// poem-openapi writes a tagged union's members as wrappers, `U_Member: allOf[{type: enum
/// [tag]}, {$ref: Member}]`, which generators turn into a second, unnamed class per member. The
/// tag goes into the member itself, the union points at the members, and the wrappers go.
fn flatten_tagged_unions(schemas: &mut Map<String, Value>) {
    const PREFIX: &str = "#/components/schemas/";
    let unions: Vec<String> = schemas
        .iter()
        .filter(|(_, s)| s["discriminator"]["mapping"].is_object())
        .map(|(name, _)| name.clone())
        .collect();
    for union in unions {
        let mapping = schemas[&union]["discriminator"]["mapping"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut members = Map::new();
        for (tag, wrapper_ref) in mapping {
            let wrapper_name = wrapper_ref
                .as_str()
                .unwrap_or_default()
                .trim_start_matches(PREFIX);
            let Some(wrapper) = schemas.remove(wrapper_name) else {
                continue;
            };
            let parts = wrapper["allOf"].as_array().cloned().unwrap_or_default();
            let member_ref = parts
                .iter()
                .find_map(|p| p.get("$ref").and_then(Value::as_str))
                .expect("a union member wraps a reference")
                .to_string();
            let tag_property = parts
                .iter()
                .find_map(|p| p["properties"].get("type"))
                .cloned()
                .expect("a union member wrapper carries the tag");
            let member = schemas
                .get_mut(member_ref.trim_start_matches(PREFIX))
                .expect("the member is a schema");
            if let Some(example) = member.get_mut("example").and_then(Value::as_object_mut) {
                let mut tagged = Map::new();
                tagged.insert("type".into(), Value::String(tag.clone()));
                tagged.extend(std::mem::take(example));
                *example = tagged;
            }
            let mut properties = Map::new();
            properties.insert("type".into(), tag_property);
            properties.extend(
                member["properties"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            );
            member["properties"] = Value::Object(properties);
            let mut required = vec![Value::from("type")];
            required.extend(member["required"].as_array().cloned().unwrap_or_default());
            member["required"] = Value::Array(required);
            members.insert(tag, Value::String(member_ref));
        }
        let schema = schemas[&union]
            .as_object_mut()
            .expect("a schema is an object");
        // `type: object` beside `oneOf` makes some generators drop the union.
        schema.remove("type");
        schema.insert(
            "oneOf".into(),
            members.values().map(|r| json!({ "$ref": r })).collect(),
        );
        schema.insert(
            "discriminator".into(),
            json!({ "propertyName": "type", "mapping": members }),
        );
    }
}

fn refine_operation(operation: &mut Value, errors: &[&[OperationErrors]]) {
    let id = operation["operationId"]
        .as_str()
        .expect("every operation has an operationId")
        .to_string();
    let secured = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let takes = |name: &str| {
        operation["security"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|scheme| scheme.get(name).is_some())
    };
    let admin = takes("adminAuth");
    // `GET /cluster` takes either: the admin's, or the `default` tenant's while the admin API
    // is off.
    let admin_or_default = admin && takes("basicAuth");
    if !secured {
        operation["security"] = json!([]);
    }
    let declared = errors
        .iter()
        .flat_map(|table| table.iter())
        .find(|e| e.operation == id)
        .unwrap_or_else(|| panic!("operation {id} has no ERRORS entry"));
    let responses = operation["responses"]
        .as_object_mut()
        .expect("an operation has responses");
    for (status, response) in responses.iter_mut() {
        if status.starts_with('2') && response["description"] == "" {
            response["description"] = Value::from(success_descriptions(&id, response));
        }
    }
    // An error answer that is not the envelope (the link page's HTML) keeps its own content;
    // it gets its description from `ERRORS` like the others.
    let mut own: Map<String, Value> = responses
        .iter()
        .filter(|(status, r)| {
            !status.starts_with('2')
                && r["content"]
                    .as_object()
                    .is_some_and(|c| !c.is_empty() && !c.contains_key(JSON))
        })
        .map(|(status, r)| (status.clone(), r.clone()))
        .collect();
    responses.retain(|status, _| !status.starts_with('4') && !status.starts_with('5'));
    let mut answers: Vec<(u16, &str)> = declared.answers.concat();
    if admin_or_default {
        answers.push((
            401,
            "`AUTHENTICATION_ERROR`: no or wrong credentials; send HTTP Basic auth with the admin \
             credential (`WAGATE_ADMIN_AUTH`) or, while the admin API is off, a credential of the \
             `default` tenant (`WAGATE_BASIC_AUTH`).",
        ));
    } else if admin {
        answers.push((
            401,
            "`AUTHENTICATION_ERROR`: no or wrong credentials; send HTTP Basic auth with the admin \
             credential (`WAGATE_ADMIN_AUTH`). A tenant's credential is refused.",
        ));
    } else if secured {
        answers.push((
            401,
            "`AUTHENTICATION_ERROR`: no or wrong credentials; send HTTP Basic auth with a wagate \
             credential.",
        ));
    }
    if secured {
        answers.push((
            429,
            "`RATE_LIMITED`: too many failed sign-ins from this address or for this username \
             (10 a minute); retry after `Retry-After` seconds.",
        ));
    }
    if operation.get("requestBody").is_some() {
        answers.push((413, "`PAYLOAD_TOO_LARGE`: the body is larger than 64 KiB."));
        answers.push((
            415,
            "`UNSUPPORTED_MEDIA_TYPE`: the body is not sent as `application/json`.",
        ));
    }
    if !INFALLIBLE.contains(&id.as_str()) {
        answers.push((
            500,
            "`INTERNAL_SERVER_ERROR`: a fault inside the gateway; it is logged. Try again.",
        ));
    }
    // One answer per status; causes that share a status are described together.
    let mut by_status: std::collections::BTreeMap<u16, Vec<&str>> = Default::default();
    for (status, description) in answers {
        by_status.entry(status).or_default().push(description);
    }
    let responses = operation["responses"]
        .as_object_mut()
        .expect("checked above");
    for (status, descriptions) in by_status {
        let description = descriptions.join(" ");
        let response = match own.remove(&status.to_string()) {
            Some(mut response) => {
                response["description"] = Value::from(description);
                response
            }
            None => error_response(status, &description),
        };
        responses.insert(status.to_string(), response);
    }
    for parameter in operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let name = parameter["name"].as_str().unwrap_or_default().to_string();
        let example = PARAMETER_EXAMPLES
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("parameter {name} of {id} has no example"));
        parameter["example"] = serde_json::from_str(example.1).expect("examples are JSON");
    }
}

/// What a successful answer holds, for the operations whose handler returns a bare payload.
fn success_descriptions(id: &str, response: &Value) -> String {
    if response["content"].get("text/event-stream").is_some() {
        return "A stream of Server-Sent Events, open until the client closes it (or falls \
                behind); each message's `data` is one of `StreamData`."
            .to_string();
    }
    format!("Done: the answer of `{id}` in the envelope (`code` is `SUCCESS`).")
}

fn error_response(status: u16, description: &str) -> Value {
    let mut response = json!({
        "description": description,
        "content": { JSON: { "schema": { "$ref": ERROR_SCHEMA } } },
    });
    let header = match status {
        401 => Some(("WWW-Authenticate", "`Basic realm=\"wagate\"`.")),
        405 => Some(("Allow", "The methods this path serves.")),
        429 => Some(("Retry-After", "Seconds to wait before trying again.")),
        503 => Some((
            "Retry-After",
            "Seconds to wait before trying again; sent with `DEVICE_MOVING`.",
        )),
        _ => None,
    };
    if let Some((name, description)) = header {
        let schema = if matches!(status, 429 | 503) {
            json!({ "type": "integer", "format": "uint64" })
        } else {
            json!({ "type": "string" })
        };
        // `GET /ready`'s 503 (`NOT_READY`) sends no `Retry-After`.
        let required = status != 503;
        response["headers"] = json!({
            name: { "required": required, "description": description, "schema": schema }
        });
    }
    response
}
