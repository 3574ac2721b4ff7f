//! The image a managed broker runs: the chart's default per driver, or the spec's version or image.

use oms_crds::access_point::Driver;

/// Default images per driver (from the chart's values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultImages {
    pub kafka: String,
    pub nats: String,
    pub rabbitmq: String,
    pub mqtt: String,
    pub rocketmq: String,
    /// The image `oms-probe` is copied from into brokers' pods: the operator's own.
    pub probe: String,
}

impl DefaultImages {
    #[must_use]
    pub fn for_driver(&self, driver: Driver) -> Option<&str> {
        match driver {
            Driver::Kafka => Some(&self.kafka),
            Driver::Nats => Some(&self.nats),
            Driver::Rabbitmq => Some(&self.rabbitmq),
            Driver::Mqtt => Some(&self.mqtt),
            Driver::Rocketmq => Some(&self.rocketmq),
            Driver::Gateway => None,
        }
    }
}

/// The image to run: the spec's image, else the default image with the spec's version as tag.
#[must_use]
pub fn broker_image(default: &str, version: Option<&str>, image: Option<&str>) -> String {
    if let Some(image) = image {
        return image.to_owned();
    }
    match version {
        Some(version) => {
            // Strip the tag, not a registry port (`registry:5000/kafka`).
            let repository = match default.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => repo,
                _ => default,
            };
            format!("{repository}:{version}")
        }
        None => default.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tag_replacement_keeps_a_registry_port() {
        assert_eq!(broker_image("registry:5000/kafka", Some("4.0.0"), None), "registry:5000/kafka:4.0.0");
        assert_eq!(broker_image("nats:2.15.2", None, Some("my/nats:dev")), "my/nats:dev");
    }
}
