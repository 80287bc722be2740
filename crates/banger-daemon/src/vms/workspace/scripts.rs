//! The guest's side of prepare and export: fixed scripts, given their
//! values as positional arguments (never interpolated into the text).
//! git runs with hooks off (`core.hooksPath=/dev/null`): a repository's
//! `post-checkout` or `reference-transaction` hook is not banger's to run.

/// `$1` the workspace path, `$2` a commit to check out (or empty), `$3` a
/// branch to create (or empty), `$4`/`$5` git user.name and user.email (or
/// empty). stdin: the tar of the checkout, ending with [`banger_api::workspace::END_MARKER`].
///
/// The tree is built beside the workspace and swapped in only when every
/// step worked: a failed prepare leaves the previous tree as it was. The
/// prepared state is kept as `refs/banger/prepared` (a commit of the tree
/// as carried, made with a scratch index so the user's index is
/// untouched), the base an export diffs against. `core.checkStat=minimal`
/// lets the host's index (sizes and whole-second mtimes, which the tar
/// keeps) stand in the guest, so git does not re-read every file.
pub const PREPARE: &str = r#"set -eu
exec 1>&2
dest=$1 checkout=$2 branch=$3 name=$4 email=$5
if [ -d "$dest" ] && [ "$(stat -c %d "$dest")" != "$(stat -c %d "$dest/..")" ]; then
    # A workspace disk of its own: built inside it, contents swapped.
    new=$dest/.banger-new old=$dest/.banger-old
else
    new=$dest.banger-new old=$dest.banger-old
fi
rm -rf "$new" "$old"
mkdir -p "$new"
trap 'rm -rf "$new"' EXIT
# The objects this tree holds, linked (not copied) into the new one: the
# host leaves out of the stream those it was told are here.
if [ -d "$dest/.git/objects" ]; then
    mkdir -p "$new/.git/objects"
    for d in "$dest"/.git/objects/[0-9a-f][0-9a-f] "$dest/.git/objects/pack"; do
        # Best effort (a gc running meanwhile, another file system): the
        # manifest check below is what decides.
        if [ -d "$d" ] && [ ! -L "$d" ]; then cp -al "$d" "$new/.git/objects/" 2>/dev/null || true; fi
    done
fi
tar -x -f - -C "$new"
if [ ! -e "$new/.git/banger-end" ]; then
    echo "the workspace stream ended early: no end marker" >&2
    exit 4
fi
rm -f "$new/.git/banger-end"
held=$new/.git/banger-held-files
if [ -f "$held" ]; then
    # Work-tree files the guest held as its last prepare (the manifest's
    # first name) carried them, unchanged since: linked from the tree
    # this one replaces, once checked again that they still are.
    expected=$(head -z -n 1 "$held" | tr -d '\0')
    now=$(git -C "$dest" rev-parse -q --verify 'refs/banger/prepared^{commit}' 2>/dev/null || true)
    if [ -z "$expected" ] || [ "$now" != "$expected" ]; then
        echo "the workspace was prepared again since the host asked what it holds: prepare again" >&2
        exit 5
    fi
    # One diff of the whole tree, then what it shares with the manifest:
    # thousands of pathspecs cost git seconds under TCG.
    if ! (cd "$dest" && git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.fileMode=true \
        diff-index -z --name-only --no-renames "$expected") > "$held.diff"; then
        echo "git could not check the work-tree files the guest held: prepare again" >&2
        exit 5
    fi
    LC_ALL=C sort -z "$held.diff" > "$held.changed"
    tail -z -n +2 "$held" | LC_ALL=C sort -z > "$held.sorted"
    if [ -n "$(LC_ALL=C comm -z -12 "$held.sorted" "$held.changed" | tr -d '\0' | head -c 1)" ]; then
        echo "work-tree files the guest held changed in the guest since the host asked: prepare again" >&2
        exit 5
    fi
    if ! tail -z -n +2 "$held" | (cd "$dest" && xargs -0 -r cp -l -P --parents -t "$new" --); then
        echo "work-tree files left out of the stream as the guest held them are gone from the guest: prepare again" >&2
        exit 5
    fi
    rm -f "$held" "$held.sorted" "$held.diff" "$held.changed"
fi
if [ -f "$new/.git/banger-held" ]; then
    # Pack files by name; objects by id, wherever the guest keeps them.
    grep '^pack/' "$new/.git/banger-held" | while IFS= read -r f; do
        # -s: a file a crash left empty is not one the guest holds.
        if [ ! -s "$new/.git/objects/$f" ] || [ -L "$new/.git/objects/$f" ]; then
            echo "git pack file $f, left out of the stream as the guest held it, is gone from the guest: prepare again" >&2
            exit 5
        fi
    done
    sed -n '/^pack\//!s#/##p' "$new/.git/banger-held" > "$new/.git/banger-held-ids"
    # Never a fetch from a promisor remote for an object that is not here.
    if ! GIT_NO_LAZY_FETCH=1 git -C "$new" -c core.hooksPath=/dev/null cat-file --batch-check \
        < "$new/.git/banger-held-ids" > "$new/.git/banger-held-found"; then
        echo "git could not check the objects left out of the stream as the guest held them (above)" >&2
        exit 5
    fi
    gone=$(grep -m1 ' missing$' "$new/.git/banger-held-found" || true)
    if [ -n "$gone" ]; then
        echo "git object ${gone%% *}, left out of the stream as the guest held it, is gone from the guest: prepare again" >&2
        exit 5
    fi
    rm -f "$new/.git/banger-held" "$new/.git/banger-held-ids" "$new/.git/banger-held-found"
fi
git config --global core.checkStat minimal
git config --global core.trustctime false
if [ -n "$name" ]; then git config --global user.name "$name"; fi
if [ -n "$email" ]; then git config --global user.email "$email"; fi
touch "${HOME:-/root}/.hushlogin"
cd "$new"
g() { git -c core.hooksPath=/dev/null "$@"; }
if [ -n "$checkout" ]; then g checkout -q -f --detach "$checkout"; fi
if [ -n "$branch" ]; then g checkout -q -b "$branch"; fi
g update-index -q --refresh >/dev/null 2>&1 || true
# The host sends the base with a work tree; a --from checkout makes its own.
if [ -n "$checkout" ] || ! g rev-parse -q --verify refs/banger/prepared >/dev/null; then
    scratch=$(mktemp -d)
    trap 'rm -rf "$new" "$scratch"' EXIT
    if [ -f .git/index ]; then cp .git/index "$scratch/index"; fi
    GIT_INDEX_FILE=$scratch/index g add -A
    tree=$(GIT_INDEX_FILE=$scratch/index g write-tree)
    base=$(GIT_AUTHOR_NAME=banger GIT_AUTHOR_EMAIL=banger@localhost GIT_COMMITTER_NAME=banger GIT_COMMITTER_EMAIL=banger@localhost g commit-tree -m "banger: the workspace as prepared" "$tree")
    g update-ref refs/banger/prepared "$base"
fi
cd /
if [ "$new" = "$dest/.banger-new" ]; then
    mkdir "$old"
    for f in "$dest"/* "$dest"/.[!.]* "$dest"/..?*; do
        case $f in "$new"|"$old"|"$dest/lost+found") continue ;; esac
        if [ -e "$f" ] || [ -L "$f" ]; then mv -- "$f" "$old/"; fi
    done
    for f in "$new"/* "$new"/.[!.]* "$new"/..?*; do
        if [ -e "$f" ] || [ -L "$f" ]; then mv -- "$f" "$dest/"; fi
    done
    rmdir "$new"
else
    if [ -e "$dest" ]; then mv "$dest" "$old"; fi
    mv "$new" "$dest"
fi
# The old tree goes in the background: deleting some 9,000 files takes
# seconds under TCG, longer than sending them. Moved first inside the new
# .git (the same file system), where no git command looks, so the
# workspace shows nothing of it meanwhile.
trash="$dest/.git/banger-trash.$$"
if [ -e "$old" ] && mv "$old" "$trash" 2>/dev/null; then
    rm -rf "$trash" </dev/null >/dev/null 2>&1 &
else
    rm -rf "$old"
fi
cd "$dest"
if command -v mise >/dev/null 2>&1; then mise trust --quiet --all >/dev/null 2>&1 || true; fi
"#;

/// `$1` the workspace path. stdout: what its `.git/objects` holds, one
/// per line, relative to it: pack files by name, loose objects, and the
/// objects in its smaller packs (those a prepare made of loose objects;
/// a history pack is held by its name, and listing its millions of
/// objects would outgrow the listing), by their loose names (`xx/yyyy`).
/// Never through alternates, which a prepare does not keep, and never a
/// pack whose data is missing or empty (git would not read it).
///
/// Then, after a `\t--- files COMMIT` line (`refs/banger/prepared`), the
/// regular files of the work tree as the last prepare carried it, and
/// after `\t--- changed` the paths that may have changed since: what
/// `git diff-index` finds (content, mode, type, or only the stat data; a
/// file the guest's index does not track counts as changed) and every
/// entry marked skip-worktree or assume-unchanged, whose edits git does
/// not look at. Names are quoted as git quotes them (`core.quotePath`),
/// so a name never starts with a tab. A `\t--- end` line follows only
/// when every listing ran to the end: without it no file is held.
pub const HELD: &str = r#"cd "$1/.git/objects" 2>/dev/null || exit 0
find . -type f -size +0 \( -path './[0-9a-f][0-9a-f]/*' -o -path './pack/pack-*' \) | cut -c3-
for idx in pack/pack-*.idx; do
    data=${idx%.idx}.pack
    if [ -f "$idx" ] && [ ! -L "$idx" ] && [ -s "$data" ] && [ ! -L "$data" ] &&
        [ "$(stat -c %s "$idx")" -le 4194304 ]; then
        git -C "$1" show-index < "$idx" 2>/dev/null | cut -d' ' -f2 | sed 's#^..#&/#'
    fi
done
ws=$1
g() { git -C "$ws" -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.quotePath=true "$@"; }
prepared=$(g rev-parse -q --verify 'refs/banger/prepared^{commit}' 2>/dev/null) || exit 0
printf '\t--- files %s\n' "$prepared"
g ls-tree -r "$prepared" | grep -E '^100(644|755) blob '
printf '\t--- changed\n'
g -c core.fileMode=true diff-index --name-only --no-renames "$prepared" || exit 0
flagged=$(g ls-files -v) || exit 0
printf '%s\n' "$flagged" | sed -n 's/^[a-zS] //p'
printf '\t--- end\n'
"#;

/// `$1` the workspace path. stdout: the changes since the prepare as a
/// binary git patch. New objects go to a scratch object directory and the
/// index is a scratch copy: an export changes nothing in the guest.
pub const EXPORT: &str = r#"set -eu
cd "$1"
g() { git -c core.hooksPath=/dev/null -c core.splitIndex=false "$@"; }
base=$(g rev-parse -q --verify 'refs/banger/prepared^{tree}') || {
    echo "the workspace in $1 has no prepared base (refs/banger/prepared): prepare it again" >&2
    exit 3
}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
objects=$(cd "$(g rev-parse --git-path objects)" && pwd)
mkdir "$scratch/objects"
export GIT_OBJECT_DIRECTORY="$scratch/objects" GIT_ALTERNATE_OBJECT_DIRECTORIES="$objects"
export GIT_INDEX_FILE="$scratch/index"
if [ -f .git/index ]; then cp .git/index "$GIT_INDEX_FILE"; fi
g add -A
tree=$(g write-tree)
g -c diff.noprefix=false -c diff.mnemonicPrefix=false -c core.quotePath=true \
    diff --no-color --no-ext-diff --no-textconv --binary --full-index -M "$base" "$tree"
"#;
