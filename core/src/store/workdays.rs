//! The store's working-day calendar: the shipped years plus the years (or corrections) an
//! operator added, versioned like the settings — each addition an act recorded before it takes
//! effect.

use serde::{Deserialize, Serialize};

use crate::calendar::{WorkCalendar, YearTable};
use crate::error::Result;

use super::authority::Act;
use super::{Store, Writer};

/// One committed version of the added years.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalendarVersion {
    /// Version number.
    pub version: u64,
    /// Who added them.
    pub author: String,
    /// When.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Why.
    pub note: String,
    /// Every year added to the shipped calendar so far (a year here replaces the shipped one).
    pub years: Vec<YearTable>,
    /// The audit trail's head when committed (see [`super::Manifest::anchor`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<crate::audit::Checkpoint>,
}

impl Store {
    /// The years added by operators (empty until the first addition).
    pub fn calendar_additions(&self) -> Result<Vec<YearTable>> {
        let chain = self.calendar_chain();
        match chain.current()? {
            0 => Ok(Vec::new()),
            v => Ok(chain.read::<CalendarVersion>(v)?.years),
        }
    }

    /// The working-day calendar in force: the shipped years with the operators' additions.
    pub fn calendar(&self) -> Result<WorkCalendar> {
        WorkCalendar::builtin().with_years(&self.calendar_additions()?)
    }
}

impl Writer<'_> {
    /// Add (or correct) years of the working-day calendar, as an operator, recorded before they
    /// apply. Each table is checked (dates of its year, adjusted working days on weekends, a
    /// named source) before anything changes.
    pub fn add_calendar_years(
        &mut self,
        tables: &[YearTable],
        note: &str,
    ) -> Result<CalendarVersion> {
        let years: Vec<i32> = tables.iter().map(|t| t.year).collect();
        self.authorize(&Act::ChangeCalendar { years: &years })?;
        if tables.is_empty() {
            return Err(crate::error::Error::invalid("no calendar year given"));
        }
        WorkCalendar::builtin().with_years(tables)?;
        let mut all = self.store().calendar_additions()?;
        all.retain(|t| !years.contains(&t.year));
        all.extend(tables.iter().cloned());
        all.sort_by_key(|t| t.year);
        let chain = self.store().calendar_chain();
        let version = chain.current()? + 1;
        let doc = CalendarVersion {
            version,
            author: self.actor().to_string(),
            created_at: chrono::Utc::now(),
            note: note.to_string(),
            years: all,
            anchor: Some(self.anchor()?),
        };
        self.commit_recorded(
            &chain,
            version,
            &doc,
            "calendar",
            serde_json::json!({ "calendar_version": version, "note": note, "years": years,
                "sources": tables.iter().map(|t| t.source.clone()).collect::<Vec<_>>() }),
        )?;
        Ok(doc)
    }
}
