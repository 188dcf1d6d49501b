//! MongoDB: the connection (connect, prove it with a ping, check it for readiness), the
//! documents as stored, migrations, the lease that serialises the reaper, and the paging
//! cursor.

mod command_events;
pub(crate) mod cursor;
pub(crate) mod documents;
pub(crate) mod lease;
pub(crate) mod migrations;

use std::time::Duration;

use mongodb::bson::doc;
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use crate::settings::InvalidSetting;

/// The `mongo.*` section of the service configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MongoSettings {
    /// Connection string; may hold a password, so it is secret and printed redacted.
    #[serde(serialize_with = "serialize_redacted_uri")]
    pub uri: SecretString,
    /// Database name.
    pub database: String,
    /// How long the driver looks for a usable server before failing.
    pub server_selection_timeout_ms: u64,
}

impl MongoSettings {
    /// Checks the `mongo.*` values on their own.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let uri = self.uri.expose_secret();
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err(InvalidSetting::new(
                "mongo.uri",
                "must be a mongodb:// or mongodb+srv:// connection string (set MONGODB_URI)",
            ));
        }
        if self.database.is_empty() {
            return Err(InvalidSetting::new("mongo.database", "must not be empty"));
        }
        Ok(())
    }
}

impl MongoSettings {
    /// The connection string with any password replaced by `***`.
    pub fn redacted_uri(&self) -> String {
        redact_uri(self.uri.expose_secret())
    }
}

fn serialize_redacted_uri<S: Serializer>(uri: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_uri(uri.expose_secret()))
}

/// Connection-string options known to hold no secret; any other option's value is
/// redacted (`authMechanismProperties` may carry an AWS session token,
/// `tlsCertificateKeyFilePassword` a key's password, and options the driver learns later
/// may carry anything).
const PLAIN_OPTIONS: &[&str] = &[
    "appname",
    "authmechanism",
    "authsource",
    "compressors",
    "connecttimeoutms",
    "directconnection",
    "heartbeatfrequencyms",
    "journal",
    "loadbalanced",
    "localthresholdms",
    "maxconnecting",
    "maxidletimems",
    "maxpoolsize",
    "minpoolsize",
    "proxyhost",
    "proxyport",
    "readconcernlevel",
    "readpreference",
    "readpreferencetags",
    "replicaset",
    "retryreads",
    "retrywrites",
    "serverselectiontimeoutms",
    "sockettimeoutms",
    "srvmaxhosts",
    "srvservicename",
    "ssl",
    "timeoutms",
    "tls",
    "tlsallowinvalidcertificates",
    "tlsallowinvalidhostnames",
    "tlscafile",
    "tlscertificatekeyfile",
    "tlsinsecure",
    "uuidrepresentation",
    "w",
    "waitqueuetimeoutms",
    "wtimeoutms",
    "zlibcompressionlevel",
];

/// The connection string without its password or secret options.
fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return "[redacted]".into();
    };
    let (address, query) = match rest.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (rest, None),
    };
    let authority_end = address.find('/').unwrap_or(address.len());
    let address = match address[..authority_end].rfind('@') {
        Some(at) => {
            let user = address[..at].split(':').next().unwrap_or_default();
            format!("{user}:***@{}", &address[at + 1..])
        }
        None => address.to_owned(),
    };
    let Some(query) = query else {
        return format!("{scheme}://{address}");
    };
    let options: Vec<String> = query
        .split('&')
        .map(|option| match option.split_once('=') {
            Some((name, value)) if PLAIN_OPTIONS.contains(&name.to_ascii_lowercase().as_str()) => {
                format!("{name}={value}")
            }
            Some((name, _)) => format!("{name}=***"),
            None => option.to_owned(),
        })
        .collect();
    format!("{scheme}://{address}?{}", options.join("&"))
}

/// Why MongoDB could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    /// The connection string does not parse.
    #[error("invalid MongoDB connection string: {0}")]
    InvalidUri(#[source] mongodb::error::Error),
    /// No server answered in time, or the command failed.
    #[error("MongoDB at {uri} did not answer: {source}")]
    Unreachable {
        /// The redacted connection string.
        uri: String,
        /// The driver's error.
        #[source]
        source: mongodb::error::Error,
    },
    /// The check took longer than allowed.
    #[error("MongoDB did not answer within {0:?}")]
    Timeout(Duration),
}

/// A connected MongoDB client and the service's database.
#[derive(Clone, Debug)]
pub struct Mongo {
    client: Client,
    database: Database,
    redacted_uri: String,
    options: ClientOptions,
    commands: command_events::CommandCounts,
}

impl Mongo {
    /// Connects and pings, so a wrong URI or an unreachable server fails here, within the
    /// configured server-selection timeout, not at the first request.
    pub async fn connect(settings: &MongoSettings) -> Result<Self, MongoError> {
        Self::connect_with(settings, false).await
    }

    /// Like [`Mongo::connect`], with a span for every command the driver sends, for
    /// traces.
    pub async fn connect_with_command_spans(settings: &MongoSettings) -> Result<Self, MongoError> {
        Self::connect_with(settings, true).await
    }

    async fn connect_with(settings: &MongoSettings, spans: bool) -> Result<Self, MongoError> {
        let mut options = ClientOptions::parse(settings.uri.expose_secret())
            .await
            .map_err(MongoError::InvalidUri)?;
        let commands = command_events::CommandCounts::default();
        options.command_event_handler = Some(command_events::handler(commands.clone(), spans));
        options.server_selection_timeout =
            Some(Duration::from_millis(settings.server_selection_timeout_ms));
        options.app_name = Some("posts-api".into());
        let client = Client::with_options(options.clone()).map_err(MongoError::InvalidUri)?;
        let mongo = Self {
            database: client.database(&settings.database),
            client,
            redacted_uri: settings.redacted_uri(),
            options,
            commands,
        };
        mongo.ping().await?;
        Ok(mongo)
    }

    /// Another client with the same options whose connection pool and monitors run on the
    /// calling thread's runtime: a request served by a single-threaded runtime (an HTTP
    /// worker) then never wakes another thread to reach MongoDB. Connects lazily.
    pub fn on_this_runtime(&self) -> Result<Self, MongoError> {
        let client = Client::with_options(self.options.clone()).map_err(MongoError::InvalidUri)?;
        Ok(Self {
            database: client.database(self.database.name()),
            client,
            redacted_uri: self.redacted_uri.clone(),
            options: self.options.clone(),
            commands: self.commands.clone(),
        })
    }

    /// How many commands of each name this client and those made from it sent: each is
    /// one round trip to the server.
    pub fn commands_sent(&self) -> Vec<(String, u64)> {
        self.commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, count)| (name.clone(), *count))
            .collect()
    }

    /// The service's database.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Runs `ping` on the database.
    pub async fn ping(&self) -> Result<(), MongoError> {
        self.database
            .run_command(doc! { "ping": 1 })
            .await
            .map(drop)
            .map_err(|source| MongoError::Unreachable {
                uri: self.redacted_uri.clone(),
                source,
            })
    }

    /// Pings with a deadline. The driver's futures must not be dropped mid-flight, so the
    /// ping runs in its own task and only the wait for it is cut short.
    pub async fn ping_within(&self, timeout: Duration) -> Result<(), MongoError> {
        let mongo = self.clone();
        let ping = tokio::spawn(async move { mongo.ping().await });
        match tokio::time::timeout(timeout, ping).await {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => Err(MongoError::Unreachable {
                uri: self.redacted_uri.clone(),
                source: mongodb::error::Error::custom(join_error.to_string()),
            }),
            Err(_) => Err(MongoError::Timeout(timeout)),
        }
    }

    /// Closes the connection pools, waiting for operations in flight.
    pub async fn shutdown(self) {
        self.client.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_uri_hides_the_password_only() {
        assert_eq!(
            redact_uri("mongodb://app:s3cret@db.example:27017/posts?tls=true"),
            "mongodb://app:***@db.example:27017/posts?tls=true"
        );
    }

    #[test]
    fn redacted_uri_without_credentials_is_unchanged() {
        assert_eq!(
            redact_uri("mongodb://127.0.0.1:27017/?directConnection=true"),
            "mongodb://127.0.0.1:27017/?directConnection=true"
        );
    }

    #[test]
    fn redacted_uri_hides_secret_options_and_any_it_does_not_know() {
        assert_eq!(
            redact_uri(
                "mongodb+srv://cluster.example.net/?authMechanism=MONGODB-AWS\
                 &authMechanismProperties=AWS_SESSION_TOKEN:FQoGZXIvYXdz\
                 &tlsCertificateKeyFilePassword=hunter2&retryWrites=true&someFutureOption=x"
            ),
            "mongodb+srv://cluster.example.net/?authMechanism=MONGODB-AWS\
             &authMechanismProperties=***&tlsCertificateKeyFilePassword=***&retryWrites=true\
             &someFutureOption=***"
        );
    }

    #[test]
    fn redacted_uri_of_garbage_reveals_nothing() {
        assert_eq!(redact_uri("user:pass@host"), "[redacted]");
    }
}
