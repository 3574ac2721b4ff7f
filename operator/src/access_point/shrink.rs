//! A managed cluster asked to run fewer brokers retires them one at a time, each step decided
//! from what the brokers say and taken before the cluster's objects are applied (a step that
//! stops a broker makes them one pod fewer): NATS through its system account ([`nats_shrink`]),
//! RabbitMQ through its nodes' CLI ([`rabbitmq_shrink`]), Kafka by moving partitions
//! ([`kafka_placement`]). This is what the controller sees of each.

use super::{kafka_placement, nats_shrink, rabbitmq_shrink};

/// The step a shrink's brokers allowed, and how taking it went.
pub(super) struct Shrinking {
    asked: Asked,
    taken: Result<(), String>,
    /// Brokers running, and asked for.
    sizes: (i32, i32),
}

enum Asked {
    Nats(nats_shrink::Shrinking),
    Rabbitmq(Box<rabbitmq_shrink::Shrinking>),
    Kafka(kafka_placement::Shrinking),
}

impl Shrinking {
    /// Takes the step NATS decided on the way between `sizes`.
    pub async fn nats(shrinking: nats_shrink::Shrinking, sizes: (i32, i32)) -> Self {
        let taken = shrinking.take().await;
        Shrinking { asked: Asked::Nats(shrinking), taken, sizes }
    }

    /// Takes the step RabbitMQ decided on the way between `sizes`.
    pub async fn rabbitmq(shrinking: rabbitmq_shrink::Shrinking, sizes: (i32, i32)) -> Self {
        let taken = shrinking.take().await;
        Shrinking { asked: Asked::Rabbitmq(Box::new(shrinking)), taken, sizes }
    }

    /// Takes the step Kafka decided on the way between `sizes`.
    pub async fn kafka(shrinking: kafka_placement::Shrinking, sizes: (i32, i32)) -> Self {
        let taken = shrinking.take().await;
        Shrinking { asked: Asked::Kafka(shrinking), taken, sizes }
    }

    /// What the Progressing condition says about it.
    pub fn progress(&self) -> String {
        let (running, desired) = self.sizes;
        match &self.asked {
            Asked::Nats(shrinking) => shrinking.step.progress(running, desired),
            Asked::Rabbitmq(shrinking) => shrinking.step.progress(running, desired),
            Asked::Kafka(shrinking) => shrinking.step.progress(running, desired),
        }
    }

    /// How taking the step went.
    pub fn taken(&self) -> Result<(), &str> {
        self.taken.as_ref().copied().map_err(String::as_str)
    }

    /// The step cannot be done safely: the cluster keeps its size.
    pub fn refused(&self) -> bool {
        match &self.asked {
            Asked::Nats(shrinking) => matches!(shrinking.step, nats_shrink::Step::Refuse(_)),
            Asked::Rabbitmq(shrinking) => matches!(shrinking.step, rabbitmq_shrink::Step::Refuse(_)),
            Asked::Kafka(shrinking) => matches!(shrinking.step, kafka_placement::Step::Refuse(_)),
        }
    }

    /// The leaving broker is out of its cluster: the StatefulSet runs one pod fewer.
    pub fn stopped_one(&self) -> bool {
        let stops = match &self.asked {
            Asked::Nats(shrinking) => matches!(shrinking.step, nats_shrink::Step::Stop { .. }),
            Asked::Rabbitmq(shrinking) => shrinking.step.stops_one(),
            Asked::Kafka(shrinking) => matches!(shrinking.step, kafka_placement::Step::Stop { .. }),
        };
        stops && self.taken.is_ok()
    }

    /// The Event action of the step and the pod it is about, for a step taken on the brokers.
    pub fn action(&self) -> Option<(&'static str, &str)> {
        match &self.asked {
            Asked::Nats(shrinking) => shrinking.step.action(),
            Asked::Rabbitmq(shrinking) => shrinking.step.action(),
            Asked::Kafka(shrinking) => shrinking.step.action(),
        }
    }
}
