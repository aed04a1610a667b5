//! A subscriber's dead letters: listing, replaying and purging them.

use std::sync::Arc;

use super::FjallStore;
use crate::command::{Command, Reply};
use crate::error::{Error, FjallResult, Result};
use crate::subscription_state::SubscriptionState;
use crate::support::read;
use crate::{DeadLetter, Message, codec, keys, writer};

impl FjallStore {
    /// Lists up to `limit` dead letters of a subscriber (all its topics, or
    /// one), oldest first. Blocking.
    pub fn dead_letters(
        &self,
        subscriber: &str,
        topic: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let mut out = Vec::new();
        for sub in self.subscriptions_of(subscriber, topic)? {
            for guard in self
                .shared
                .ks
                .dead
                .prefix(keys::subscription_prefix(sub.id))
            {
                if out.len() >= limit {
                    return Ok(out);
                }
                let (key, value) = guard.into_inner().fjall()?;
                let (_, id) = keys::decode_dead_key(&key)?;
                let record = codec::decode_dead(&value)?;
                let message = if record.message.is_empty() {
                    Message {
                        topic: Arc::clone(&sub.topic.name),
                        partition: record.partition,
                        offset: record.offset,
                        timestamp_ms: 0,
                        key: None,
                        headers: Vec::new(),
                        payload: Vec::new(),
                    }
                } else {
                    let topic = &sub.topic.name;
                    codec::decode_message(topic, record.partition, record.offset, &record.message)?
                };
                out.push(DeadLetter {
                    id,
                    subscriber: subscriber.to_owned(),
                    attempts: record.attempts,
                    reason: record.reason,
                    failed_at_ms: record.failed_at_ms,
                    message,
                });
            }
        }
        Ok(out)
    }

    fn subscriptions_of(
        &self,
        subscriber: &str,
        topic: Option<&str>,
    ) -> Result<Vec<Arc<SubscriptionState>>> {
        if let Some(topic) = topic {
            return Ok(vec![self.find_subscription(subscriber, topic)?]);
        }
        let subs: Vec<_> = read(&self.shared.subscriptions)
            .values()
            .filter(|sub| &*sub.subscriber == subscriber)
            .cloned()
            .collect();
        if subs.is_empty() {
            return Err(Error::UnknownSubscription {
                subscriber: subscriber.to_owned(),
                topic: "*".to_owned(),
            });
        }
        Ok(subs)
    }

    /// Re-enqueues a subscriber's dead letters for immediate redelivery to
    /// that subscriber only, with fresh attempt counts. Returns how many.
    pub async fn replay_dead_letters(&self, subscriber: &str, topic: Option<&str>) -> Result<u64> {
        self.for_dead_letters(subscriber, topic, |sub, reply| Command::ReplayDead {
            sub,
            reply,
        })
        .await
    }

    /// Deletes a subscriber's dead letters. Returns how many.
    pub async fn purge_dead_letters(&self, subscriber: &str, topic: Option<&str>) -> Result<u64> {
        self.for_dead_letters(subscriber, topic, |sub, reply| Command::PurgeDead {
            sub,
            reply,
        })
        .await
    }

    /// Sends `command` for each of the subscriber's subscriptions until the
    /// writer handled fewer than a command's bound of dead letters; answers
    /// how many it handled in all.
    async fn for_dead_letters(
        &self,
        subscriber: &str,
        topic: Option<&str>,
        command: impl Fn(Arc<SubscriptionState>, Reply<u64>) -> Command,
    ) -> Result<u64> {
        let mut total = 0;
        for sub in self.subscriptions_of(subscriber, topic)? {
            loop {
                let count = self
                    .shared
                    .ask(|reply| command(Arc::clone(&sub), reply))
                    .await?;
                total += count;
                if count < writer::MAX_DEAD_PER_COMMAND as u64 {
                    break;
                }
            }
        }
        Ok(total)
    }
}
