//! Turning API results into what a person reads: aligned tables.

use banger_api::{CatalogEntry, Image, Kernel, VmSummary};

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
    let mut table = Table::new(vec![
        "NAME",
        "STATE",
        "IP",
        "IMAGE",
        "WORKSPACE",
        "CREATED",
        "ID",
    ]);
    for vm in vms {
        table.row(vec![
            vm.name.clone(),
            vm.state.as_str().to_owned(),
            vm.ip.clone(),
            vm.image.clone(),
            vm.workspace.clone().unwrap_or_else(|| "-".to_owned()),
            vm.created_at.clone(),
            vm.id.clone(),
        ]);
    }
    table.render()
}

/// Bytes for people: `312.4 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss, reason = "display only")]
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `kernel catalog` / `image catalog` as a table.
pub fn catalog_table(entries: &[CatalogEntry]) -> String {
    let mut table = Table::new(vec!["NAME", "PRESENT", "RECIPE", "DESCRIPTION"]);
    for e in entries {
        table.row(vec![
            e.name.clone(),
            if e.present { "yes" } else { "no" }.to_owned(),
            e.recipe_hash.chars().take(12).collect(),
            e.description.clone(),
        ]);
    }
    table.render()
}

/// `kernel list` as a table.
pub fn kernel_table(kernels: &[Kernel]) -> String {
    let mut table = Table::new(vec!["NAME", "SIZE", "CREATED", "RECIPE", "SOURCE"]);
    for k in kernels {
        table.row(vec![
            k.name.clone(),
            human_bytes(k.size_bytes),
            k.created_at.clone(),
            k.recipe_hash.chars().take(12).collect(),
            k.source_package.clone(),
        ]);
    }
    table.render()
}

/// `image list` as a table.
pub fn image_table(images: &[Image]) -> String {
    let mut table = Table::new(vec!["NAME", "SIZE", "CREATED", "KERNEL", "SOURCE"]);
    for i in images {
        table.row(vec![
            i.name.clone(),
            human_bytes(i.size_bytes),
            i.created_at.clone(),
            i.kernel.clone(),
            i.source.clone(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(312 * 1024 * 1024 + 400 * 1024), "312.4 MiB");
    }

    use super::*;
    use banger_api::VmState;

    #[test]
    fn empty_vm_table_is_the_header_alone() {
        assert_eq!(
            vm_table(&[]),
            "NAME  STATE  IP  IMAGE  WORKSPACE  CREATED  ID\n"
        );
    }

    #[test]
    fn columns_align_to_the_widest_cell() {
        let vm = |name: &str, state| VmSummary {
            id: "0123".into(),
            name: name.into(),
            state,
            image: "debian-bookworm".into(),
            ip: "10.77.0.2".into(),
            created_at: "2026-11-24T08:00:00Z".into(),
            workspace: (name == "a").then(|| "/home/dev/app".into()),
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
        let ws_col = lines[0].find("WORKSPACE").unwrap();
        assert_eq!(lines[1].find("/home/dev/app").unwrap(), ws_col);
        assert_eq!(lines[2].find(" - ").unwrap() + 1, ws_col);
        assert!(text.lines().all(|l| !l.ends_with(' ')));
    }
}
