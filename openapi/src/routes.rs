//! The served routes as the spec lists them: which methods a path answers (the `Allow` of a
//! 405), the names of its path parameters (poem-openapi reports a bad one as `param0`) and the
//! template a path is served by (the metrics' `route` label, never the concrete path).

use serde_json::Value;

/// One path template of the spec, e.g. `/webhooks/{id}/deliveries/{delivery_id}/retry`.
#[derive(Debug, Clone)]
struct Template {
    /// As the spec writes it.
    path: String,
    /// Literal segments as `Some`, parameters as `None`.
    segments: Vec<Option<String>>,
    /// Parameter names in order.
    params: Vec<String>,
    /// Methods served, upper case.
    methods: Vec<String>,
}

impl Template {
    fn matches(&self, segments: &[&str]) -> bool {
        self.segments.len() == segments.len()
            && self
                .segments
                .iter()
                .zip(segments)
                .all(|(t, s)| t.as_deref().is_none_or(|literal| literal == *s))
    }

    /// How specific a match is: literal segments count, so `/devices/{id}/login` beats a
    /// template with a parameter in that place.
    fn literals(&self) -> usize {
        self.segments.iter().filter(|s| s.is_some()).count()
    }
}

/// Every path template of a spec document.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    templates: Vec<Template>,
}

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

impl Routes {
    /// Reads the `paths` of an OpenAPI document.
    pub fn from_spec(spec: &Value) -> Self {
        let templates = spec["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(path, item)| {
                let segments: Vec<Option<String>> = split(path)
                    .map(|s| {
                        let is_param = s.starts_with('{') && s.ends_with('}');
                        (!is_param).then(|| s.to_string())
                    })
                    .collect();
                let params = split(path)
                    .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                    .map(str::to_string)
                    .collect();
                let methods = METHODS
                    .iter()
                    .filter(|m| item.get(**m).is_some())
                    .map(|m| m.to_uppercase())
                    .collect();
                Template {
                    path: path.clone(),
                    segments,
                    params,
                    methods,
                }
            })
            .collect();
        Self { templates }
    }

    fn find(&self, path: &str) -> Option<&Template> {
        let segments: Vec<&str> = split(path).collect();
        self.templates
            .iter()
            .filter(|t| t.matches(&segments))
            .max_by_key(|t| t.literals())
    }

    /// The methods served on `path`, for `Allow`, e.g. `GET, DELETE`.
    pub fn allow(&self, path: &str) -> Option<String> {
        self.find(path).map(|t| t.methods.join(", "))
    }

    /// The spec's template of the route serving `path`, e.g. `/devices/{device_id}/login`.
    pub fn template(&self, path: &str) -> Option<&str> {
        self.find(path).map(|t| t.path.as_str())
    }

    /// The name of the `index`-th path parameter of the route serving `path`.
    pub fn param_name(&self, path: &str, index: usize) -> Option<&str> {
        self.find(path)
            .and_then(|t| t.params.get(index))
            .map(String::as_str)
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn routes() -> Routes {
        Routes::from_spec(&json!({"paths": {
            "/webhooks/{id}": {"get": {}, "patch": {}, "delete": {}},
            "/webhooks/{id}/deliveries/{delivery_id}/retry": {"post": {}},
            "/devices/{device_id}/login": {"get": {}},
            "/devices/{device_id}/{x}": {"put": {}},
        }}))
    }

    #[test]
    fn allow_lists_the_methods_of_the_matching_template() {
        assert_eq!(
            routes().allow("/webhooks/abc").as_deref(),
            Some("GET, DELETE, PATCH")
        );
        assert_eq!(routes().allow("/nowhere"), None);
    }

    #[test]
    fn a_literal_segment_beats_a_parameter() {
        assert_eq!(routes().allow("/devices/d1/login").as_deref(), Some("GET"));
    }

    #[test]
    fn a_path_is_named_by_its_template() {
        let routes = routes();
        assert_eq!(
            routes.template("/devices/d1/login"),
            Some("/devices/{device_id}/login")
        );
        assert_eq!(routes.template("/webhooks/abc"), Some("/webhooks/{id}"));
        assert_eq!(routes.template("/nowhere"), None);
    }

    #[test]
    fn path_parameters_are_named_by_position() {
        let routes = routes();
        let path = "/webhooks/1/deliveries/2/retry";
        assert_eq!(routes.param_name(path, 0), Some("id"));
        assert_eq!(routes.param_name(path, 1), Some("delivery_id"));
        assert_eq!(routes.param_name(path, 2), None);
    }
}
