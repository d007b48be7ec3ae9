//! Pub/sub from the command line: `--subscribe TOPIC` prints a topic's messages as JSON
//! events, `codio-node publish` sends one message.

use std::{path::Path, time::Duration};

use anyhow::{Context, bail};
use codio_network::{
    Multiaddr, NetworkManager, pubsub::Message, pubsub::PubsubConfig, pubsub::Topic,
    pubsub::TopicEvent,
};
use serde_json::{Value, json};

use crate::output::Output;

/// How long `publish` keeps its connections after publishing, so the message leaves the send
/// queues before they close (one gossipsub heartbeat).
const LINGER: Duration = Duration::from_secs(1);

/// The message to publish: the content of the file `message` names, else the text itself.
pub(crate) fn message_bytes(message: &str) -> anyhow::Result<Vec<u8>> {
    let max = PubsubConfig::default().max_message_bytes();
    let path = Path::new(message);
    let data = if path.is_file() {
        let size = path.metadata()?.len();
        if size > max as u64 {
            bail!("{message} is {size} bytes; a message is at most {max}");
        }
        std::fs::read(path).with_context(|| format!("reading {message}"))?
    } else {
        message.as_bytes().to_vec()
    };
    if data.len() > max {
        bail!("the message is {} bytes; at most {max}", data.len());
    }
    Ok(data)
}

/// Starts `network`, dials `dial`, waits up to `wait` for a peer subscribed to `topic`, then
/// publishes `data` and returns the message id.
pub(crate) async fn publish(
    network: &NetworkManager,
    dial: &[Multiaddr],
    topic: &str,
    data: Vec<u8>,
    wait: Duration,
) -> anyhow::Result<String> {
    network.start().await.context("starting the network")?;
    let mut handle = network.join(topic).await?;
    for address in dial {
        if let Err(error) = network.connect_peer(address.clone()).await {
            tracing::warn!(%address, %error, "dial failed");
        }
    }
    let subscribed = tokio::time::timeout(wait, async {
        while handle.subscribers().await?.is_empty() {
            match handle.next().await {
                Some(TopicEvent::PeerSubscribed(peer)) => tracing::debug!(%peer, "subscribed"),
                Some(_) => {}
                None => bail!("the network shut down"),
            }
        }
        Ok(())
    })
    .await;
    match subscribed {
        Ok(result) => result?,
        Err(_) => bail!("no peer subscribed to {topic} within {wait:?}"),
    }
    let id = handle.publish(data).await?;
    // Not a synchronisation point: gossipsub has no acknowledgement; this gives the send
    // queues one heartbeat before shutdown closes the connections.
    tokio::time::sleep(LINGER).await;
    Ok(id.to_string())
}

/// Prints `topic`'s events until the node shuts down: messages as `message` events (the
/// payload as `text` when it is UTF-8, else as `hex`), mesh changes as `mesh_changed`.
pub(crate) async fn print_topic(mut topic: Topic, output: Output) {
    while let Some(event) = topic.next().await {
        match event {
            TopicEvent::Message(message) => {
                tracing::info!(topic = %message.topic, from = %message.from, bytes = message.data.len(), "message");
                output.json("message", message_json(&message));
            }
            TopicEvent::MeshChanged(change) => {
                tracing::debug!(topic = topic.name(), size = change.size, "mesh changed");
                let mut fields = serde_json::to_value(&change).unwrap_or(Value::Null);
                if let Value::Object(map) = &mut fields {
                    map.insert("topic".into(), json!(topic.name()));
                }
                output.json("mesh_changed", fields);
            }
            TopicEvent::Lagged(missed) => {
                tracing::warn!(topic = topic.name(), missed, "topic reader fell behind");
                output.json(
                    "topic_lagged",
                    json!({ "topic": topic.name(), "missed": missed }),
                );
            }
            other => tracing::debug!(?other, "topic event"),
        }
    }
}

fn message_json(message: &Message) -> Value {
    let mut fields = serde_json::to_value(message).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut fields {
        map.insert("bytes".into(), json!(message.data.len()));
        match std::str::from_utf8(&message.data) {
            Ok(text) => map.insert("text".into(), json!(text)),
            Err(_) => map.insert("hex".into(), json!(hex(&message.data))),
        };
    }
    fields
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_a_file_or_the_text() {
        let dir = std::env::temp_dir().join(format!("codio-publish-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("m.txt");
        std::fs::write(&file, b"from a file").unwrap();
        assert_eq!(
            message_bytes(file.to_str().unwrap()).unwrap(),
            b"from a file"
        );
        assert_eq!(message_bytes("just text").unwrap(), b"just text");
        std::fs::write(&file, vec![0u8; 64 * 1024 + 1]).unwrap();
        assert!(message_bytes(file.to_str().unwrap()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(hex(&[0, 255]), "00ff");
    }
}
