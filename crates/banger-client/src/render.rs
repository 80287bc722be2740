//! Turning API results into what a person reads: aligned tables.

use banger_api::VmSummary;

/// A plain text table: a header row and aligned columns separated by two
/// spaces, as `docker ps` prints them. An empty table is its header alone.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: Vec<&'static str>) -> Self {
        Self {
            header,
            rows: Vec::new(),
        }
    }

    /// Appends a row; it should have one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, each line ending in a newline, no trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `banger vm list` as a table.
pub fn vm_table(vms: &[VmSummary]) -> String {
    let mut table = Table::new(vec!["NAME", "STATE", "IMAGE", "CREATED", "ID"]);
    for vm in vms {
        table.row(vec![
            vm.name.clone(),
            vm.state.as_str().to_owned(),
            vm.image.clone(),
            vm.created_at.clone(),
            vm.id.clone(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_api::VmState;

    #[test]
    fn empty_vm_table_is_the_header_alone() {
        assert_eq!(vm_table(&[]), "NAME  STATE  IMAGE  CREATED  ID\n");
    }

    #[test]
    fn columns_align_to_the_widest_cell() {
        let vm = |name: &str, state| VmSummary {
            id: "0123".into(),
            name: name.into(),
            state,
            image: "debian-bookworm".into(),
            created_at: "2026-11-24T08:00:00Z".into(),
        };
        let text = vm_table(&[
            vm("a", VmState::Running),
            vm("longer-name", VmState::Stopped),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let state_col = lines[0].find("STATE").unwrap();
        assert_eq!(lines[1].find("running").unwrap(), state_col);
        assert_eq!(lines[2].find("stopped").unwrap(), state_col);
        assert!(text.lines().all(|l| !l.ends_with(' ')));
    }
}
