//! The start-up check: authentication from the config, the cluster answers, the index prefix
//! is a valid index name, and the index template is installed.

use std::fmt;
use std::time::Duration;

use iotflow_config::ElasticsearchConfig;
use iotflow_sink::SinkError;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::Value;

use crate::retry::{classify, classify_status};
use crate::ElasticsearchConnector;

/// The index template of the daily indices (`index_patterns` is replaced by [`prepare`] with
/// `{prefix}-*`).
pub const IOT_DATA_TEMPLATE: &str =
    include_str!("../../../schemas/elasticsearch/iot-data-template.json");

/// How the sink authenticates. `Debug` never shows a secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// No `Authorization` header (security disabled, or a proxy that adds it).
    #[default]
    None,
    /// HTTP basic authentication.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `Authorization: ApiKey <key>`, where `<key>` is the `encoded` value Elasticsearch
    /// returned when the key was created (base64 of `id:api_key`).
    ApiKey(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Auth::ApiKey(_) => f.debug_tuple("ApiKey").field(&"<redacted>").finish(),
        }
    }
}

impl Auth {
    /// The config's choice: an API key if one is set, else basic auth if a user is set, else
    /// none.
    pub fn from_config(config: &ElasticsearchConfig) -> Auth {
        if !config.api_key.is_empty() {
            Auth::ApiKey(config.api_key.clone())
        } else if !config.user.is_empty() {
            Auth::Basic {
                user: config.user.clone(),
                password: config.password.clone(),
            }
        } else {
            Auth::None
        }
    }

    fn apply(&self, request: RequestBuilder) -> Result<RequestBuilder, SinkError> {
        Ok(match self {
            Auth::None => request,
            // reqwest marks the basic-auth header sensitive itself.
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
            Auth::ApiKey(key) => {
                let mut value = HeaderValue::from_str(&format!("ApiKey {key}")).map_err(|_| {
                    SinkError::Definite(
                        "the Elasticsearch API key contains characters not allowed in a header"
                            .into(),
                    )
                })?;
                value.set_sensitive(true);
                request.header(AUTHORIZATION, value)
            }
        })
    }
}

/// A checked connection to an Elasticsearch cluster.
#[derive(Clone)]
pub struct Connection {
    pub(crate) client: Client,
    url: String,
    auth: Auth,
    version: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.url)
            .field("auth", &self.auth)
            .field("version", &self.version)
            .finish()
    }
}

impl Connection {
    /// A connection to `url` that nothing checked, for unit tests.
    #[cfg(test)]
    pub(crate) fn unchecked(url: &str) -> Connection {
        Connection {
            client: Client::new(),
            url: url.into(),
            auth: Auth::None,
            version: "unknown".into(),
        }
    }

    /// The cluster's base URL (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server version `GET /` reported (`version.number`), or `"unknown"`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Sends `request` with the connection's credentials; the status and body of the answer.
    pub(crate) async fn send(
        &self,
        request: RequestBuilder,
        context: &(dyn Fn() -> String + Sync),
    ) -> Result<(StatusCode, Vec<u8>), SinkError> {
        let response = self
            .auth
            .apply(request)?
            .send()
            .await
            .map_err(|e| classify(&context(), &e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| classify(&context(), &e))?;
        Ok((status, body.to_vec()))
    }
}

/// Index names must be lower case and free of `\ / * ? " < > | , # :` and spaces, and must not
/// start with `-`, `_` or `+`.
fn check_index_prefix(prefix: &str) -> Result<(), SinkError> {
    let bad_char = prefix
        .chars()
        .any(|c| c.is_uppercase() || c.is_whitespace() || r#"\/*?"<>|,#:"#.contains(c));
    if prefix.is_empty() || bad_char || prefix.starts_with(['-', '_', '+']) || prefix == "." {
        return Err(SinkError::Definite(format!(
            "`{prefix}` cannot start an Elasticsearch index name (lower case, no spaces or \\ / * ? \" < > | , # :, not starting with - _ +)"
        )));
    }
    Ok(())
}

/// [`IOT_DATA_TEMPLATE`] with `index_patterns` set to `{index_prefix}-*`.
fn template_for(index_prefix: &str) -> Result<Value, SinkError> {
    let mut template: Value = serde_json::from_str(IOT_DATA_TEMPLATE)
        .map_err(|e| SinkError::Definite(format!("Elasticsearch index template: {e}")))?;
    let Some(object) = template.as_object_mut() else {
        return Err(SinkError::Definite(
            "Elasticsearch index template is not a JSON object".into(),
        ));
    };
    object.insert(
        "index_patterns".into(),
        Value::from(vec![format!("{index_prefix}-*")]),
    );
    Ok(template)
}

/// Checks the cluster and installs the index template.
///
/// `GET /` must answer within `elasticsearch.request_timeout_ms` (which is also every later
/// request's timeout); then, when `elasticsearch.install_template` is on, [`IOT_DATA_TEMPLATE`]
/// is `PUT` as `_index_template/{index_prefix}` with `index_patterns` set to
/// `{index_prefix}-*`, so each new daily index gets the mappings. Credentials come from the
/// config ([`Auth::from_config`]); a URL carrying a password is refused, because URLs end up
/// in log lines.
///
/// `workers` is not used: reqwest's client keeps its own pool of connections, which grows
/// with the requests in flight.
pub async fn prepare(
    config: &ElasticsearchConfig,
    workers: usize,
) -> Result<ElasticsearchConnector, SinkError> {
    let _ = workers;
    let index_prefix = config.index_prefix.as_str();
    let url = config.url.trim_end_matches('/').to_string();
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| SinkError::Definite(format!("Elasticsearch URL `{url}`: {e}")))?;
    if parsed.password().is_some() || !parsed.username().is_empty() {
        return Err(SinkError::Definite(
            "the Elasticsearch URL carries credentials; set the user and password (or API key) in the sink's auth settings instead".into(),
        ));
    }
    check_index_prefix(index_prefix)?;
    let template = if config.install_template {
        Some(template_for(index_prefix)?)
    } else {
        None
    };

    let timeout = Duration::from_millis(config.request_timeout_ms);
    let client = Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| classify("building the Elasticsearch client", &e))?;
    let mut connection = Connection {
        client,
        url,
        auth: Auth::from_config(config),
        version: "unknown".into(),
    };

    let context = || format!("checking Elasticsearch at {}", connection.url);
    let (status, body) = connection
        .send(
            connection.client.get(format!("{}/", connection.url)),
            &context,
        )
        .await?;
    if !status.is_success() {
        return Err(classify_status(&context(), status, &body));
    }
    let version = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.pointer("/version/number")?.as_str().map(str::to_string));

    if let Some(template) = template {
        let context = || {
            format!(
                "installing index template `{index_prefix}` on Elasticsearch at {}",
                connection.url
            )
        };
        let request = connection
            .client
            .put(format!("{}/_index_template/{index_prefix}", connection.url))
            .header(CONTENT_TYPE, "application/json")
            .body(template.to_string());
        let (status, body) = connection.send(request, &context).await?;
        if !status.is_success() {
            return Err(classify_status(&context(), status, &body));
        }
    }
    if let Some(version) = version {
        connection.version = version;
    }
    tracing::info!(url = %connection.url, version = %connection.version, index_prefix, "Elasticsearch sink ready");
    Ok(ElasticsearchConnector {
        config: config.clone(),
        connection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_prefixes() {
        assert!(check_index_prefix("iot-data").is_ok());
        assert!(check_index_prefix("iot_data.v2").is_ok());
        for bad in ["", "IoT", "_iot", "-iot", "iot data", "iot*", "a/b", "a:b"] {
            assert!(check_index_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let basic = Auth::Basic {
            user: "elastic".into(),
            password: "hunter2".into(),
        };
        let text = format!("{basic:?}");
        assert!(
            text.contains("elastic") && !text.contains("hunter2"),
            "{text}"
        );
        let key = Auth::ApiKey("c2VjcmV0OmtleQ==".into());
        assert!(!format!("{key:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn auth_comes_from_the_config_api_key_first() {
        let mut c = ElasticsearchConfig::default();
        assert_eq!(Auth::from_config(&c), Auth::None);
        c.user = "elastic".into();
        c.password = "hunter2".into();
        assert_eq!(
            Auth::from_config(&c),
            Auth::Basic {
                user: "elastic".into(),
                password: "hunter2".into()
            }
        );
        c.api_key = "a2V5".into();
        assert_eq!(Auth::from_config(&c), Auth::ApiKey("a2V5".into()));
    }

    #[test]
    fn the_template_is_valid_json_with_the_mappings() {
        let t: Value = serde_json::from_str(IOT_DATA_TEMPLATE).unwrap();
        let p = &t["template"]["mappings"]["properties"];
        assert_eq!(p["location"]["type"], "geo_point");
        assert_eq!(p["event_time"]["format"], "yyyy-MM-dd HH:mm:ss.SSS");
        assert_eq!(p["kafka_ts"]["format"], "epoch_millis");
        for k in [
            "pboxid",
            "company",
            "site",
            "line",
            "device_name",
            "model",
            "device_status",
        ] {
            assert_eq!(p[k]["type"], "keyword", "{k}");
        }
        assert_eq!(
            template_for("x")
                .unwrap()
                .get("index_patterns")
                .cloned()
                .unwrap(),
            serde_json::json!(["x-*"])
        );
    }
}
