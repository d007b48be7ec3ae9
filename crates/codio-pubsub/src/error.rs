//! The errors of the pub/sub layer.

/// Errors of the pub/sub layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PubsubError {
    /// A setting cannot work.
    #[error(transparent)]
    InvalidConfig(#[from] codio_base::InvalidConfig),
    /// This node has joined as many topics as it may.
    #[error("at most {0} topics may be joined")]
    TooManyTopics(usize),
    /// Gossipsub refused the topic.
    #[error("topic refused: {0}")]
    InvalidTopic(String),
    /// The message is above the size bound.
    #[error("message of {size} bytes is above the {max}-byte bound")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The bound.
        max: usize,
    },
    /// No connected peer is subscribed to the topic.
    #[error("no connected peer is subscribed to the topic")]
    NoPeers,
    /// The same message was published already (within the duplicate cache).
    #[error("the message was published already")]
    Duplicate,
    /// Every subscribed peer's send queue is full.
    #[error("the send queues of all {0} subscribed peers are full")]
    QueuesFull(usize),
    /// Signing the message failed.
    #[error("signing the message failed: {0}")]
    Signing(String),
    /// The behaviour did not answer in time (its swarm is stalled).
    #[error("the pub/sub behaviour did not answer in time")]
    Timeout,
    /// The swarm is gone.
    #[error("the network has shut down")]
    ShutDown,
}

/// Gossipsub's `MessageTooLarge` is mapped by the caller, which knows the sizes.
impl From<libp2p::gossipsub::PublishError> for PubsubError {
    fn from(error: libp2p::gossipsub::PublishError) -> Self {
        use libp2p::gossipsub::PublishError as E;
        match error {
            E::Duplicate => Self::Duplicate,
            E::NoPeersSubscribedToTopic => Self::NoPeers,
            E::AllQueuesFull(peers) => Self::QueuesFull(peers),
            other => Self::Signing(other.to_string()),
        }
    }
}
