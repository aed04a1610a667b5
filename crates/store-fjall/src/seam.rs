//! The fjall store behind the storage seam (`courier_core::Storage` and
//! friends): thin adapters over [`FjallStore`] and [`FjallSubscription`], which keep
//! their own richer API for this crate's tests and benchmarks.
//!
//! Waiting for work: a [`FjallPartition`]'s watch holds receivers of the
//! partition's durable end (moved by the writer after each fsync), of its
//! subscription's control signal (seek, replay, settings, removal) and of
//! its partition's lease-ended signal. Receivers created before a poll have
//! seen the current versions, so whatever happens after the poll started
//! wakes the wait.

use std::sync::Arc;

use courier_core::{
    BoxFuture, DeadLetter, Durability, EffectsCommit, Guarantees, Health, LeaseTicket, Message,
    NewMessage, PartitionFeed, Poll, Position, SeekTarget, SettleReport, Settlement, StoreStats,
    SubscriptionInfo, SubscriptionSettings, TopicInfo, TopicSettings, WaitForWork, Waiting,
    WorkWatch,
};
use tokio::sync::watch;

use crate::subscription::FjallSubscription;
use crate::{FjallStore, FsyncPolicy, Result};

impl courier_core::Storage for FjallStore {
    fn guarantees(&self) -> Guarantees {
        let durability = match self.config().fsync {
            FsyncPolicy::Always => Durability::Fsynced,
            FsyncPolicy::Interval(every) => Durability::FsyncedWithin {
                interval_ms: every.as_millis().try_into().unwrap_or(u64::MAX),
            },
            FsyncPolicy::Never => Durability::Written,
        };
        Guarantees {
            durability,
            effects: EffectsCommit::Atomic,
            delivers_durable_only: true,
        }
    }

    fn default_topic_settings(&self) -> TopicSettings {
        self.config().default_topic
    }

    fn create_topic<'a>(
        &'a self,
        name: &'a str,
        settings: TopicSettings,
    ) -> BoxFuture<'a, Result<TopicInfo>> {
        Box::pin(async move { FjallStore::create_topic(self, name, settings).await })
    }

    fn append<'a>(
        &'a self,
        topic: &'a str,
        messages: &'a [NewMessage],
    ) -> BoxFuture<'a, Result<Vec<Position>>> {
        Box::pin(async move { FjallStore::append(self, topic, messages).await })
    }

    fn read(&self, topic: &str, partition: u32, from: u64, max: usize) -> Result<Vec<Message>> {
        FjallStore::read(self, topic, partition, from, max)
    }

    fn subscribe<'a>(
        &'a self,
        subscriber: &'a str,
        topic: &'a str,
        settings: SubscriptionSettings,
    ) -> BoxFuture<'a, Result<Arc<dyn courier_core::Subscription>>> {
        Box::pin(async move {
            let sub = FjallStore::subscribe(self, subscriber, topic, settings).await?;
            Ok(Arc::new(sub) as Arc<dyn courier_core::Subscription>)
        })
    }

    fn unsubscribe<'a>(&'a self, subscriber: &'a str, topic: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { FjallStore::unsubscribe(self, subscriber, topic).await })
    }

    fn seek<'a>(
        &'a self,
        subscriber: &'a str,
        topic: &'a str,
        target: SeekTarget,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { FjallStore::seek(self, subscriber, topic, target).await })
    }

    fn dead_letters(
        &self,
        subscriber: &str,
        topic: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        FjallStore::dead_letters(self, subscriber, topic, limit)
    }

    fn replay_dead_letters<'a>(
        &'a self,
        subscriber: &'a str,
        topic: Option<&'a str>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move { FjallStore::replay_dead_letters(self, subscriber, topic).await })
    }

    fn purge_dead_letters<'a>(
        &'a self,
        subscriber: &'a str,
        topic: Option<&'a str>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move { FjallStore::purge_dead_letters(self, subscriber, topic).await })
    }

    fn state_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
        FjallStore::state_get(self, namespace, key)
    }

    fn state_read(
        &self,
        namespace: &str,
        key: &str,
        f: &mut dyn FnMut(Option<&[u8]>),
    ) -> Result<()> {
        FjallStore::state_read(self, namespace, key, f)
    }

    fn state_scan(
        &self,
        namespace: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        FjallStore::state_scan_after(self, namespace, prefix, start_after, limit)
    }

    fn topics(&self) -> Vec<TopicInfo> {
        FjallStore::topics(self)
    }

    fn topic_info(&self, name: &str) -> Result<TopicInfo> {
        FjallStore::topic_info(self, name)
    }

    fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        FjallStore::subscriptions(self)
    }

    fn subscription_info(&self, subscriber: &str, topic: &str) -> Result<SubscriptionInfo> {
        FjallStore::subscription_info(self, subscriber, topic)
    }

    fn stats(&self) -> StoreStats {
        FjallStore::stats(self)
    }

    fn health(&self) -> Health {
        FjallStore::health(self)
    }

    fn sync(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { FjallStore::sync(self).await })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(FjallStore::close(self))
    }
}

impl courier_core::Subscription for FjallSubscription {
    fn subscriber(&self) -> &str {
        FjallSubscription::subscriber(self)
    }

    fn topic(&self) -> &str {
        FjallSubscription::topic(self)
    }

    fn partitions(&self) -> u32 {
        FjallSubscription::partitions(self)
    }

    fn settings(&self) -> SubscriptionSettings {
        FjallSubscription::settings(self)
    }

    fn is_active(&self) -> bool {
        FjallSubscription::is_active(self)
    }

    fn partition(&self, partition: u32) -> Result<Arc<dyn PartitionFeed>> {
        Ok(Arc::new(FjallPartition::new(self.clone(), partition)?))
    }
}

/// One partition of a subscription of the fjall store.
pub struct FjallPartition {
    subscription: FjallSubscription,
    partition: u32,
}

impl FjallPartition {
    /// Fails if the subscription's topic has no such partition.
    pub fn new(subscription: FjallSubscription, partition: u32) -> Result<FjallPartition> {
        subscription.log(partition).map(|_| ())?;
        Ok(FjallPartition {
            subscription,
            partition,
        })
    }
}

impl PartitionFeed for FjallPartition {
    fn watch(&self) -> WorkWatch {
        let inner = &self.subscription.inner;
        let index = self.partition as usize;
        // `new` checked the partition, and a topic's partitions never change.
        let durable = inner.topic.partitions[index].durable.subscribe();
        WorkWatch::new(FjallWatch {
            durable,
            changed: inner.changed.watch(),
            lease_ended: inner.lease_ended[index].watch(),
        })
    }

    fn poll(&self, max: usize) -> Result<Poll> {
        self.subscription.poll(self.partition, max)
    }

    fn settle(
        &self,
        ticket: LeaseTicket,
        results: Vec<Settlement>,
    ) -> BoxFuture<'_, Result<SettleReport>> {
        Box::pin(async move { self.subscription.settle(ticket, results).await })
    }

    fn release(&self, ticket: LeaseTicket) {
        self.subscription.release(ticket);
    }
}

/// The three signals a worker of one partition waits on.
struct FjallWatch {
    durable: watch::Receiver<u64>,
    changed: watch::Receiver<u64>,
    lease_ended: watch::Receiver<u64>,
}

impl WaitForWork for FjallWatch {
    fn wait(self: Box<Self>, waiting: Waiting) -> BoxFuture<'static, ()> {
        let FjallWatch {
            mut durable,
            mut changed,
            mut lease_ended,
        } = *self;
        Box::pin(async move {
            // A closed channel (the store is going away) ends the wait too:
            // the worker then finds the subscription inactive or closed.
            match waiting {
                Waiting::Idle => {
                    tokio::select! {
                        _ = durable.changed() => {}
                        _ = changed.changed() => {}
                        _ = lease_ended.changed() => {}
                    }
                }
                Waiting::Busy => {
                    tokio::select! {
                        _ = changed.changed() => {}
                        _ = lease_ended.changed() => {}
                    }
                }
            }
        })
    }
}
