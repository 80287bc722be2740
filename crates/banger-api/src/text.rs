//! Text a guest wrote, made safe to show on a terminal.
//!
//! A guest controls its console and whatever its programs print; shown raw,
//! escape sequences reach the operator's terminal (retitling it, rewriting
//! what is on screen, or worse on some emulators). Everything that shows
//! guest bytes runs them through [`printable`] unless asked for them raw.

/// `text` without terminal control: escape sequences (CSI, OSC and the
/// rest) and every control character but newline and tab are removed, as
/// are C1 controls and DEL.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\u{1b}' => skip_escape(&mut chars),
            // CSI and OSC as single C1 characters.
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' => skip_string(&mut chars),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

fn skip_escape(chars: &mut Chars<'_>) {
    match chars.next() {
        Some('[') => skip_csi(chars),
        Some(']' | 'P' | '_' | '^' | 'X') => skip_string(chars),
        // Two-character escapes (ESC c, ESC 7, ESC ( B...): drop the next
        // one, and the one after for the charset designators.
        Some('(' | ')' | '*' | '+' | '#' | '%') => {
            chars.next();
        }
        _ => {}
    }
}

/// Parameters and intermediates up to a final byte in `@`..=`~`.
fn skip_csi(chars: &mut Chars<'_>) {
    for c in chars.by_ref() {
        if ('@'..='~').contains(&c) {
            return;
        }
    }
}

/// A string ended by BEL or ST (`ESC \` or U+009C).
fn skip_string(chars: &mut Chars<'_>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

/// `arg` as one word for a POSIX shell: ssh hands the remote side one
/// string, so each argument is quoted for the guest's shell.
pub fn shell_quote(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escape_sequences_and_controls_are_removed_text_kept() {
        for (raw, shown) in [
            ("plain line\n\tindented\n", "plain line\n\tindented\n"),
            ("\u{1b}[31mred\u{1b}[0m", "red"),
            ("\u{1b}]0;owned title\u{7}after", "after"),
            ("\u{1b}]52;c;ZXZpbA==\u{1b}\\after", "after"),
            ("\u{1b}[2J\u{1b}[Hcleared", "cleared"),
            ("bell\u{7} back\u{8}space cr\r\n", "bell backspace cr\n"),
            ("\u{9b}31mc1 csi", "c1 csi"),
            ("\u{1b}(Bcharset", "charset"),
            ("del\u{7f}", "del"),
            ("naïve ✓", "naïve ✓"),
            ("cut \u{1b}[", "cut "),
        ] {
            assert_eq!(printable(raw), shown, "{raw:?}");
        }
    }
}
