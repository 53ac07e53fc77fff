//! The committed OpenAPI spec is the one the code generates, and it is valid.

use std::path::PathBuf;

use crate::support::tools;

fn committed_spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.yaml")
}

#[test]
fn the_committed_spec_is_the_generated_one() {
    let generated = wagate_openapi::spec_yaml();
    let committed = std::fs::read_to_string(committed_spec_path()).unwrap_or_default();
    if committed != generated {
        if std::env::var_os("WAGATE_UPDATE_SPEC").is_some() {
            std::fs::write(committed_spec_path(), &generated).expect("spec written");
            return;
        }
        panic!(
            "openapi/openapi.yaml is stale: run `cargo run -- spec > openapi/openapi.yaml` \
             (or this test with WAGATE_UPDATE_SPEC=1) and commit it"
        );
    }
}

#[test]
fn the_spec_passes_openapi_spec_validator() {
    let output = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(committed_spec_path())
        .output();
    let missing = match &output {
        Err(_) => true,
        Ok(o) => String::from_utf8_lossy(&o.stderr).contains("No module named"),
    };
    let hint: &[&str] = if missing {
        &["pip install openapi-spec-validator"]
    } else {
        &[]
    };
    if tools::skip_for(hint, "validate the spec") {
        return;
    }
    let output = output.unwrap();
    assert!(
        output.status.success(),
        "the spec is invalid:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The generated spec as JSON (the committed YAML is the same document, as checked above).
fn committed_spec() -> serde_json::Value {
    serde_json::from_str(&wagate_openapi::spec_json()).expect("the spec is JSON")
}

/// Every `(path, method, operation)` of the spec.
fn operations(spec: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
    let mut found = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            found.push((path.clone(), method.clone(), operation.clone()));
        }
    }
    found
}

#[test]
fn every_error_code_is_in_the_spec_and_in_the_readme() {
    let spec = committed_spec();
    let codes: Vec<&str> = spec["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert!(codes.len() >= 16, "{codes:?}");
    assert_eq!(
        spec["components"]["schemas"]["ErrorEnvelope"]["properties"]["code"]["$ref"],
        "#/components/schemas/ErrorCode"
    );
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("README");
    for code in &codes {
        assert!(
            readme.contains(&format!("| `{code}` |")),
            "README's error table lacks {code}"
        );
    }
    // And the README names no code the gateway cannot send.
    for line in readme
        .lines()
        .filter(|l| l.starts_with("| 4") || l.starts_with("| 5"))
    {
        let code = line.split('`').nth(1).unwrap_or_default();
        assert!(
            codes.contains(&code),
            "README lists {code}, which the spec does not"
        );
    }
}

#[test]
fn fields_of_an_enum_or_object_type_are_plain_references() {
    let spec = wagate_openapi::spec_json();
    assert!(!spec.contains("\"allOf\""), "a schema still uses allOf");
}

#[test]
fn every_optional_answer_field_is_sent_and_may_be_null() {
    let spec = committed_spec();
    let device = &spec["components"]["schemas"]["DeviceInfo"];
    for field in ["jid", "display_name"] {
        assert_eq!(device["properties"][field]["nullable"], true, "{field}");
        assert!(
            device["required"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == field),
            "{field} is always sent"
        );
    }
    let create = &spec["components"]["schemas"]["CreateDeviceRequest"];
    assert!(
        create.get("required").is_none(),
        "a request's optional fields may be left out"
    );
}

#[test]
fn public_operations_say_they_need_no_credentials() {
    for (path, method, operation) in operations(&committed_spec()) {
        let public = operation["security"] == serde_json::json!([]);
        let lists_401 = operation["responses"].get("401").is_some();
        assert_eq!(public, !lists_401, "{method} {path}");
        if ["getQrImage", "health", "ready"].contains(&operation["operationId"].as_str().unwrap()) {
            assert!(public, "{method} {path} is public");
        }
    }
}

#[test]
fn every_operation_lists_only_the_errors_it_can_answer() {
    let spec = committed_spec();
    let statuses = |id: &str| -> Vec<String> {
        let (_, _, operation) = operations(&spec)
            .into_iter()
            .find(|(_, _, o)| o["operationId"] == id)
            .expect("the operation");
        operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(statuses("listDevices"), ["200", "401", "429", "500"]);
    assert_eq!(statuses("health"), ["200"]);
    assert_eq!(statuses("ready"), ["200", "503"]);
    assert_eq!(
        statuses("loginDevice"),
        [
            "200", "400", "401", "404", "409", "429", "500", "502", "503", "504"
        ]
    );
    assert_eq!(
        statuses("createDevice"),
        ["200", "400", "401", "409", "413", "415", "429", "500"]
    );
}

#[test]
fn every_parameter_and_body_has_an_example() {
    let spec = committed_spec();
    for (path, method, operation) in operations(&spec) {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            assert!(
                parameter.get("example").is_some(),
                "{method} {path} {parameter}"
            );
        }
        let ok = &operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
        if let Some(reference) = ok.as_str() {
            let name = reference.rsplit('/').next().unwrap();
            assert!(
                spec["components"]["schemas"][name].get("example").is_some(),
                "{name} has no example"
            );
        }
        let body = &operation["requestBody"]["content"]["application/json"]["schema"]["$ref"];
        if let Some(reference) = body.as_str() {
            let name = reference.rsplit('/').next().unwrap();
            assert!(
                spec["components"]["schemas"][name].get("example").is_some(),
                "{name} has no example"
            );
        }
    }
    let login = &spec["paths"]["/devices/{device_id}/login/code"]["post"]["parameters"];
    let phone = login
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "phone")
        .unwrap();
    assert_eq!(phone["example"], "628912344551");
    assert_eq!(phone["required"], true);
}

#[test]
fn events_are_a_tagged_union_with_every_type() {
    let spec = committed_spec();
    let schemas = &spec["components"]["schemas"];
    let union = &schemas["WebhookEvent"];
    assert_eq!(union["discriminator"]["propertyName"], "type");
    let mapping = union["discriminator"]["mapping"].as_object().unwrap();
    let types: Vec<&str> = schemas["EventType"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(types.contains(&"ping"));
    assert_eq!(mapping.len(), types.len());
    for (tag, reference) in mapping {
        let name = reference.as_str().unwrap().rsplit('/').next().unwrap();
        assert_eq!(
            schemas[name]["properties"]["type"]["enum"],
            serde_json::json!([tag])
        );
    }
    assert_eq!(
        schemas["LoggedOutData"]["properties"]["reason"]["$ref"],
        "#/components/schemas/LoggedOutReason"
    );
}
