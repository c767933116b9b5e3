//! Plugins through the engine: upload (validate, then store), activation and
//! rollback, deletion, information, and the checks territories need.
//!
//! Every change is serialized by the admin lock, persisted through the committer,
//! and only then applied in memory, so what a caller is told is what a restart sees.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::Engine;
use crate::domain::{StrategySpec, Territory};
use crate::error::{EngineError, Result, ValidationError};
use crate::plugins::{
    CompileError, LoadedVersion, PluginInfo, PluginStrategy, PluginVersionInfo, load, not_found,
    split_config, version_record,
};
use crate::store::codec::PluginRecord;
use crate::store::commit::{Change, settle};
use crate::strategy::Strategy;

impl Engine {
    /// Uploads a plugin module as a new version of `name` and makes it the active one.
    ///
    /// The module is validated before anything is stored: size, compilation (within
    /// a time limit), imports (only `leadroute.log`), exports, ABI version, and a smoke
    /// run on a sample lead within the call limits. A rejection is
    /// [`EngineError::PluginInvalid`] saying which check failed. When every compile
    /// slot ([`PluginLimits::max_compiles`](crate::PluginLimits::max_compiles)) is held
    /// by compiles still running, timed-out ones included, the upload is refused with
    /// [`EngineError::CompileBusy`] instead.
    pub async fn put_plugin(&self, name: &str, wasm: Vec<u8>) -> Result<PluginVersionInfo> {
        let _permit = self.enter()?;
        let _admitted = self.admit_admin()?;
        let name = check_name(name)?;
        let _admin = self.inner.admin.lock().await;
        // Compiling and the smoke run block for milliseconds to seconds: keep them off
        // the caller's async thread, without assuming a particular runtime.
        let (tx, rx) = oneshot::channel();
        let registry = self.inner.plugins.clone();
        let plugin = name.clone();
        std::thread::Builder::new()
            .name("leadroute-plugin-validate".into())
            .spawn(move || {
                let result = registry.validate(&plugin, &wasm);
                let _ = tx.send((result, wasm));
            })
            .map_err(|e| EngineError::Internal(format!("cannot start validation: {e}")))?;
        let (result, wasm) = rx
            .await
            .map_err(|_| EngineError::Internal("plugin validation thread died".into()))?;
        let compiled = result.map_err(|e| match e {
            CompileError::Invalid(message) => EngineError::PluginInvalid {
                name: name.clone(),
                message,
            },
            CompileError::Busy { running, limit } => {
                tracing::warn!(plugin = %name, running, limit, "plugin upload refused: every compile slot is held");
                EngineError::CompileBusy { running, limit }
            }
        })?;

        let mut record = self.inner.plugins.record(&name).unwrap_or(PluginRecord {
            name: name.clone(),
            active: 0,
            next_version: 1,
            versions: Vec::new(),
        });
        let version = record.next_version;
        self.check_followers(&name, Arc::new(load(&name, version, compiled.clone())))
            .await?;
        let stored = version_record(version, &wasm, self.now());
        let info = PluginVersionInfo {
            name: name.clone(),
            version,
            sha256: stored.sha256.clone(),
            size: stored.size,
        };
        record.next_version += 1;
        record.versions.push(stored);
        record.active = version;
        settle(self.inner.committer.submit(Change::PutPlugin {
            record: Box::new(record.clone()),
            wasm: Some((version, wasm)),
        }))
        .await?;
        self.inner.plugins.install(record, compiled);
        tracing::info!(plugin = %name, version, "plugin version uploaded and active");
        Ok(info)
    }

    /// Every plugin with its versions, active version, call statistics and circuit.
    pub fn plugins(&self) -> Result<Vec<PluginInfo>> {
        Ok(self.inner.plugins.infos())
    }

    /// One plugin.
    pub fn plugin(&self, name: &str) -> Result<PluginInfo> {
        self.inner.plugins.info(name)
    }

    /// Makes `version` the active one (a rollback, or a roll forward) and closes the
    /// plugin's circuit. Decisions in flight finish on the version they started with.
    pub async fn activate_plugin(&self, name: &str, version: u32) -> Result<PluginInfo> {
        let _permit = self.enter()?;
        let _admitted = self.admit_admin()?;
        let _admin = self.inner.admin.lock().await;
        let registry = &self.inner.plugins;
        let entry = registry.get(name).ok_or_else(|| not_found(name, None))?;
        let mut record = registry.record(name).ok_or_else(|| not_found(name, None))?;
        let Some(loaded) = entry.version(Some(version)) else {
            return Err(not_found(name, Some(version)));
        };
        self.check_followers(name, loaded).await?;
        record.active = version;
        settle(self.inner.committer.submit(Change::PutPlugin {
            record: Box::new(record.clone()),
            wasm: None,
        }))
        .await?;
        registry.activate(record);
        tracing::info!(plugin = %name, version, "plugin version activated");
        registry.info(name)
    }

    /// Deletes a plugin and all its versions. Refused with
    /// [`EngineError::PluginInUse`] while a territory uses it, as its strategy or as
    /// its shadow.
    pub async fn delete_plugin(&self, name: &str) -> Result<()> {
        let _permit = self.enter()?;
        let _admitted = self.admit_admin()?;
        let _admin = self.inner.admin.lock().await;
        if self.inner.plugins.get(name).is_none() {
            return Err(not_found(name, None));
        }
        let mut users: Vec<_> = {
            let dir = self.directory();
            dir.territories
                .values()
                .filter(|e| {
                    matches!(&e.territory.strategy, StrategySpec::Plugin { name: n, .. } if n == name)
                        || e.territory.shadow.as_ref().is_some_and(|s| s.plugin == name)
                })
                .map(|e| e.territory.id.clone())
                .collect()
        };
        if !users.is_empty() {
            users.sort();
            return Err(EngineError::PluginInUse {
                name: name.to_string(),
                territories: users,
            });
        }
        settle(
            self.inner
                .committer
                .submit(Change::DeletePlugin(name.to_string())),
        )
        .await?;
        self.inner.plugins.remove(name);
        tracing::info!(plugin = %name, "plugin deleted");
        Ok(())
    }

    /// Refuses to make `loaded` the active version of plugin `name` while it refuses
    /// the `plugin_config` of a territory that follows the active version: every lead
    /// there would fall back, and their failures would open the plugin's circuit for
    /// every territory. Territories pinned to a version (shadows always are) do not
    /// follow; pinning them is how a config changes shape between versions.
    async fn check_followers(&self, name: &str, loaded: Arc<LoadedVersion>) -> Result<()> {
        let mut followers: Vec<_> = self
            .directory()
            .territories
            .values()
            .filter(|e| {
                matches!(&e.territory.strategy,
                    StrategySpec::Plugin { name: n, version: None } if n == name)
            })
            .map(|e| (e.territory.id.clone(), e.territory.plugin_config_value()))
            .collect();
        if followers.is_empty() {
            return Ok(());
        }
        followers.sort_by(|a, b| a.0.cmp(&b.0));
        // Each check instantiates the version and calls it, up to its deadline: off the
        // caller's async thread, as the upload's validation.
        let (tx, rx) = oneshot::channel();
        let registry = self.inner.plugins.clone();
        let label = loaded.decided_by.clone();
        std::thread::Builder::new()
            .name("leadroute-plugin-validate".into())
            .spawn(move || {
                let refused: Vec<_> = followers
                    .into_iter()
                    .filter_map(|(territory, config)| {
                        let complaint = match split_config(&config) {
                            Ok((_, config, _)) => registry.config_error(&loaded, &config),
                            Err(e) => Some(e.to_string()),
                        };
                        complaint.map(|message| (territory, message))
                    })
                    .collect();
                let _ = tx.send(refused);
            })
            .map_err(|e| EngineError::Internal(format!("cannot start validation: {e}")))?;
        let refused = rx
            .await
            .map_err(|_| EngineError::Internal("plugin validation thread died".into()))?;
        let Some((_, first)) = refused.first() else {
            return Ok(());
        };
        let names: Vec<&str> = refused.iter().map(|(t, _)| t.as_str()).collect();
        Err(EngineError::PluginInvalid {
            name: name.to_string(),
            message: format!(
                "{label} refuses the plugin_config of territory {} ({first}); pin them to \
                 the version in force (\"strategy\": {{\"plugin\": \"{name}\", \"version\": N}}), \
                 make this one active, then save them with a config it accepts and \
                 \"version\": null",
                names.join(", ")
            ),
        })
    }

    /// A strategy running plugin `name` (`version`, or the active one) with
    /// `territory`'s configuration, for simulations.
    pub(super) fn plugin_strategy_for(
        &self,
        name: &str,
        version: Option<u32>,
        territory: &Territory,
    ) -> Result<Box<dyn Strategy>> {
        let entry = self
            .inner
            .plugins
            .get(name)
            .ok_or_else(|| not_found(name, None))?;
        if entry.version(version).is_none() {
            return Err(not_found(name, version));
        }
        Ok(Box::new(PluginStrategy::new(
            self.inner.plugins.clone(),
            name.to_string(),
            version,
            territory.id.clone(),
            &territory.plugin_config_value(),
            self.inner.clock.clone(),
        )?))
    }

    /// Rejects a territory whose `plugin_config` its plugin or its shadow refuses (a
    /// type error, a range check), with the plugin's own message, before it is stored.
    /// A shadow fed a config it refuses would only ever fail.
    pub(super) fn check_plugin_config(&self, territory: &Territory) -> Result<()> {
        let mut plugins = Vec::new();
        if let StrategySpec::Plugin { name, version } = &territory.strategy {
            plugins.push((name, *version, ""));
        }
        if let Some(shadow) = &territory.shadow {
            plugins.push((&shadow.plugin, Some(shadow.version), "shadow "));
        }
        if plugins.is_empty() {
            return Ok(());
        }
        let (_, config, _) = crate::plugins::split_config(&territory.plugin_config_value())?;
        for (name, version, role) in plugins {
            let Some(loaded) = self
                .inner
                .plugins
                .get(name)
                .and_then(|entry| entry.version(version))
            else {
                return Err(EngineError::UnknownPlugin(name.clone()));
            };
            if let Some(message) = self.inner.plugins.config_error(&loaded, &config) {
                return Err(ValidationError::field(
                    "plugin_config",
                    format!("rejected by {role}plugin {}: {message}", loaded.decided_by),
                )
                .into());
            }
        }
        Ok(())
    }
}

/// Plugin names are tags (`[a-z0-9_.-]{1,64}`), as territories name them.
fn check_name(name: &str) -> Result<String> {
    let tag = crate::domain::check_tag("name", name)?;
    if tag != name {
        return Err(ValidationError::field(
            "name",
            format!("{name:?} must be lower-case: plugin names are tags (a-z 0-9 _ . -)"),
        )
        .into());
    }
    Ok(tag)
}
