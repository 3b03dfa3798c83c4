//! The shape of `src/`, checked: imports point one way (no module circles, at the top level
//! nor among the files of a folder), and no function outgrows a screen. Run with
//! `cargo test --test it tree -- --nocapture` to see the layers.
//!
//! The graph comes from paths the compiler would resolve: `use` items and every path in
//! expressions, types and patterns (`crate::…`, `super::…`, `self::…`, and a child module's
//! name), also inside macros whose arguments are expressions (`format!`, `assert_eq!`).
//! `#[cfg(test)]` code counts too: a test that reaches back up the layers is a circle all the same.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use syn::visit::Visit;

const MAX_FN_LINES: usize = 80;

/// One parsed file of `src/` and the module path it defines (`src/hub/local.rs` → `hub::local`).
struct SourceFile {
    /// Relative to `src/`, with `/` separators.
    rel: String,
    module: Vec<String>,
    ast: syn::File,
}

/// One import or path from a file to a module elsewhere.
#[derive(Clone)]
struct Edge {
    from_file: String,
    line: usize,
    /// Absolute module path the reference lands in, re-exports followed.
    target: Vec<String>,
    /// A `pub use` of a child in a `mod.rs`: the folder's interface, not a dependency.
    interface: bool,
    in_test: bool,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("src/ is readable").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<SourceFile> {
    let src = src_dir();
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let rel = path
                .strip_prefix(&src)
                .expect("a path under src/")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(path).expect("a source file is UTF-8");
            let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("src/{rel}: {e}"));
            SourceFile {
                module: module_of(&rel),
                rel,
                ast,
            }
        })
        .collect()
}

fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    let last = parts.pop().expect("a path has a file name");
    match last.as_str() {
        "mod.rs" => {}
        "lib.rs" | "main.rs" if parts.is_empty() => {}
        _ => parts.push(last.trim_end_matches(".rs").to_string()),
    }
    parts
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && {
            let tokens = a.meta.require_list().map(|l| l.tokens.to_string());
            tokens.is_ok_and(|t| t.split(|c: char| !c.is_alphanumeric()).any(|w| w == "test"))
        }
    })
}

/// What each module declares, so paths can be resolved: its child modules and the names it
/// re-exports (`pub use topic::Subscription` → `Subscription` lives in `hub::topic`).
#[derive(Default)]
struct Modules {
    children: HashMap<Vec<String>, BTreeSet<String>>,
    reexports: HashMap<Vec<String>, HashMap<String, Vec<String>>>,
    /// Modules declared under `#[cfg(test)]`, such as `fuzz`.
    test_only: BTreeSet<Vec<String>>,
}

impl Modules {
    fn collect(files: &[SourceFile]) -> Modules {
        let mut m = Modules::default();
        for f in files {
            m.scan(&f.module, &f.ast.items);
        }
        m
    }

    fn scan(&mut self, module: &[String], items: &[syn::Item]) {
        for item in items {
            match item {
                syn::Item::Mod(md) => {
                    let mut child = module.to_vec();
                    child.push(md.ident.to_string());
                    self.children
                        .entry(module.to_vec())
                        .or_default()
                        .insert(md.ident.to_string());
                    if is_cfg_test(&md.attrs) {
                        self.test_only.insert(child.clone());
                    }
                    if let Some((_, inner)) = &md.content {
                        self.scan(&child, inner);
                    }
                }
                syn::Item::Use(u) if !matches!(u.vis, syn::Visibility::Inherited) => {
                    let mut leaves = Vec::new();
                    use_leaves(&u.tree, Vec::new(), &mut leaves);
                    for (name, path) in leaves {
                        let names = self.reexports.entry(module.to_vec()).or_default();
                        names.insert(name, path);
                    }
                }
                _ => {}
            }
        }
    }

    fn is_child(&self, module: &[String], name: &str) -> bool {
        self.children.get(module).is_some_and(|c| c.contains(name))
    }

    fn is_test_only(&self, module: &[String]) -> bool {
        (1..=module.len()).any(|n| self.test_only.contains(&module[..n]))
    }

    /// `segments` as written in `module` → the absolute module path it names, or `None` for a
    /// path that leaves the crate (`std::…`, a local variable, a type in scope).
    fn resolve(&self, module: &[String], segments: &[String]) -> Option<Vec<String>> {
        let first = segments.first()?;
        let (mut base, rest) = match first.as_str() {
            "crate" => (Vec::new(), &segments[1..]),
            "self" => (module.to_vec(), &segments[1..]),
            "super" => {
                let mut base = module.to_vec();
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                (base, rest)
            }
            name if self.is_child(module, name) => (module.to_vec(), segments),
            _ => return None,
        };
        // Walk down while each segment is a module; stop at the first item name.
        for (i, seg) in rest.iter().enumerate() {
            if self.is_child(&base, seg) {
                base.push(seg.clone());
                continue;
            }
            // An item: follow a re-export once, relative to the module that made it.
            if let Some(target) = self.reexports.get(&base).and_then(|r| r.get(seg)) {
                let mut path = target.clone();
                path.extend(rest[i + 1..].iter().cloned());
                if let Some(resolved) = self.resolve(&base, &path) {
                    return Some(resolved);
                }
            }
            break;
        }
        Some(base)
    }
}

/// The leaves of a use tree: (name brought into scope, path written).
fn use_leaves(tree: &syn::UseTree, prefix: Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
    match tree {
        syn::UseTree::Path(p) => {
            let mut prefix = prefix;
            prefix.push(p.ident.to_string());
            use_leaves(&p.tree, prefix, out);
        }
        syn::UseTree::Name(n) => {
            let mut path = prefix;
            let name = n.ident.to_string();
            if name != "self" {
                path.push(name.clone());
            }
            let name = if name == "self" {
                path.last().cloned().unwrap_or(name)
            } else {
                name
            };
            out.push((name, path));
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix;
            path.push(r.ident.to_string());
            out.push((r.rename.to_string(), path));
        }
        syn::UseTree::Glob(_) => out.push(("*".to_string(), prefix)),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_leaves(t, prefix.clone(), out);
            }
        }
    }
}

fn first_line(tree: &syn::UseTree) -> usize {
    match tree {
        syn::UseTree::Path(p) => p.ident.span().start().line,
        syn::UseTree::Name(n) => n.ident.span().start().line,
        syn::UseTree::Rename(r) => r.ident.span().start().line,
        syn::UseTree::Glob(g) => g.star_token.spans[0].start().line,
        syn::UseTree::Group(g) => g.brace_token.span.open().start().line,
    }
}

/// Walks one file, recording every path that names a module of this crate.
struct References<'a> {
    modules: &'a Modules,
    file: &'a SourceFile,
    /// The module the walk is in: the file's, or an inline `mod` inside it.
    module: Vec<String>,
    in_test: bool,
    edges: Vec<Edge>,
}

impl References<'_> {
    fn record(&mut self, segments: &[String], line: usize, interface: bool) {
        if let Some(target) = self.modules.resolve(&self.module, segments) {
            self.edges.push(Edge {
                from_file: self.file.rel.clone(),
                line,
                target,
                interface,
                in_test: self.in_test,
            });
        }
    }
}

impl<'ast> Visit<'ast> for References<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        let was_test = self.in_test;
        self.in_test |= is_cfg_test(&m.attrs);
        self.module.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.module.pop();
        self.in_test = was_test;
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        let was_test = self.in_test;
        self.in_test |= is_cfg_test(&f.attrs);
        syn::visit::visit_item_fn(self, f);
        self.in_test = was_test;
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        let was_test = self.in_test;
        self.in_test |= is_cfg_test(&i.attrs);
        syn::visit::visit_item_impl(self, i);
        self.in_test = was_test;
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let was_test = self.in_test;
        self.in_test |= is_cfg_test(&u.attrs);
        // A folder's `mod.rs` re-exporting its own children states its interface.
        let public = !matches!(u.vis, syn::Visibility::Inherited);
        let own_mod_rs = self.file.rel.ends_with("mod.rs") && self.module == self.file.module;
        let mut leaves = Vec::new();
        use_leaves(&u.tree, Vec::new(), &mut leaves);
        let line = first_line(&u.tree);
        for (_, path) in leaves {
            let child = path
                .first()
                .is_some_and(|s| self.modules.is_child(&self.module, s));
            self.record(&path, line, public && own_mod_rs && child);
        }
        self.in_test = was_test;
    }

    /// `format!`, `assert!`, `vec!` and the like take expressions: read them as such.
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        let parser = syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
        if let Ok(args) = m.parse_body_with(parser) {
            for arg in &args {
                self.visit_expr(arg);
            }
        }
        syn::visit::visit_macro(self, m);
    }

    /// `pub(in super::super)` names where an item may be seen, not what it uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        // A single segment is a local name or a type in scope, not a module.
        if segments.len() > 1 {
            let line = p.segments[0].ident.span().start().line;
            self.record(&segments, line, false);
        }
        syn::visit::visit_path(self, p);
    }
}

fn references(files: &[SourceFile], modules: &Modules) -> Vec<Edge> {
    let mut edges = Vec::new();
    for file in files {
        let mut walk = References {
            modules,
            file,
            module: file.module.clone(),
            in_test: modules.is_test_only(&file.module),
            edges: Vec::new(),
        };
        walk.visit_file(&file.ast);
        edges.extend(walk.edges);
    }
    edges
}

/// node → (node it depends on → the first reference that shows it, as `file:line`).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn add_edge(graph: &mut Graph, from: &str, to: &str, witness: String) {
    graph.entry(to.to_string()).or_default();
    graph
        .entry(from.to_string())
        .or_default()
        .entry(to.to_string())
        .or_insert(witness);
}

fn witness(e: &Edge) -> String {
    let test = if e.in_test { ", test code" } else { "" };
    format!("src/{}:{}{test}", e.from_file, e.line)
}

/// Top-level units: `src/x.rs` or `src/x/`; `lib.rs` and `main.rs` sit above them all.
fn unit_graph(edges: &[Edge], with_tests: bool) -> Graph {
    let mut graph = Graph::new();
    for e in edges.iter().filter(|e| with_tests || !e.in_test) {
        let from = module_of(&e.from_file);
        let (Some(from), Some(to)) = (from.first(), e.target.first()) else {
            continue;
        };
        if from != to {
            add_edge(&mut graph, from, to, witness(e));
        } else {
            graph.entry(from.clone()).or_default();
        }
    }
    graph
}

/// For each folder, its files (and subfolders) as nodes: `hub/` → `local.rs`, `mod.rs`, ….
fn folder_graphs(
    files: &[SourceFile],
    edges: &[Edge],
    with_tests: bool,
) -> BTreeMap<String, Graph> {
    let mut folders: BTreeMap<String, Graph> = BTreeMap::new();
    for f in files {
        let dirs: Vec<&str> = f.rel.split('/').collect();
        for depth in 1..dirs.len() {
            let folder = dirs[..depth].join("/");
            let node = node_in_folder(&folder, &f.module);
            folders.entry(folder).or_default().entry(node).or_default();
        }
    }
    let live = edges
        .iter()
        .filter(|e| (with_tests || !e.in_test) && !e.interface);
    for e in live {
        let from_module = module_of(&e.from_file);
        let dirs: Vec<&str> = e.from_file.split('/').collect();
        // Every folder the file sits in, from `src/x/` down to its own.
        for depth in 1..dirs.len() {
            let prefix = &from_module[..depth];
            if !e.target.starts_with(prefix) {
                continue;
            }
            let folder = dirs[..depth].join("/");
            let from = node_in_folder(&folder, &from_module);
            let to = node_in_folder(&folder, &e.target);
            if let (Some(graph), true) = (folders.get_mut(&folder), from != to) {
                add_edge(graph, &from, &to, witness(e));
            }
        }
    }
    folders
}

/// The node of `module` inside `folder`: the child file or subfolder it lives in, or `mod.rs`.
/// A subfolder is one node, its `mod.rs` included; an inline `mod` belongs to its file.
fn node_in_folder(folder: &str, module: &[String]) -> String {
    let depth = folder.split('/').count();
    match module.get(depth) {
        None => "mod.rs".to_string(),
        Some(child) if src_dir().join(folder).join(child).is_dir() => format!("{child}/"),
        Some(child) => format!("{child}.rs"),
    }
}

/// A circle in `graph`, as `a -> b (file:line)` steps, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut HashMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|d| d.keys()) {
            match marks.get(next.as_str()) {
                Some(Mark::Open) => {
                    let start = stack
                        .iter()
                        .position(|n| n == next)
                        .expect("a node on the stack");
                    let mut path: Vec<&String> = stack[start..].iter().collect();
                    path.push(next);
                    let steps = path
                        .windows(2)
                        .map(|w| format!("{} -> {} ({})", w[0], w[1], graph[w[0]][w[1]]))
                        .collect();
                    return Some(steps);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(c) = visit(next, graph, marks, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = HashMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node) {
            if let Some(c) = visit(node, graph, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// Every circle in `graph`, one per strongly connected knot, found by removing each found
/// circle's first step and looking again, so a failure lists all the work at once.
fn all_cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut graph = graph.clone();
    let mut found = Vec::new();
    while let Some(cycle) = find_cycle(&graph) {
        let first = &cycle[0];
        let (from, rest) = first.split_once(" -> ").expect("a step reads `a -> b`");
        let to = rest
            .split_once(' ')
            .expect("a step reads `a -> b (where)`")
            .0;
        graph
            .get_mut(from)
            .expect("the step's node is in the graph")
            .remove(to);
        found.push(cycle);
    }
    found
}

fn circles(with_tests: bool) -> Vec<String> {
    let files = sources();
    let modules = Modules::collect(&files);
    let edges = references(&files, &modules);
    let mut report = Vec::new();
    for cycle in all_cycles(&unit_graph(&edges, with_tests)) {
        report.push(format!("top level: {}", cycle.join(", ")));
    }
    for (folder, graph) in folder_graphs(&files, &edges, with_tests) {
        for cycle in all_cycles(&graph) {
            report.push(format!("in src/{folder}/: {}", cycle.join(", ")));
        }
    }
    report
}

#[test]
fn the_module_graph_has_no_circles() {
    let found = circles(true);
    assert!(
        found.is_empty(),
        "imports must point one way; these circle:\n{}",
        found.join("\n")
    );
}

/// Every `fn` with a body (free, in an impl, a trait's default) and its length in lines,
/// counted from `fn` to the closing brace.
struct Functions<'a> {
    file: &'a str,
    found: Vec<(String, usize, usize)>,
}

impl Functions<'_> {
    fn measure(&mut self, sig: &syn::Signature, body: &syn::Block) {
        let start = sig.fn_token.span.start().line;
        let end = body.brace_token.span.close().end().line;
        let name = format!("src/{}:{start} {}", self.file, sig.ident);
        self.found.push((name, start, end - start + 1));
    }
}

impl<'ast> Visit<'ast> for Functions<'_> {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.measure(&f.sig, &f.block);
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        self.measure(&f.sig, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(body) = &f.default {
            self.measure(&f.sig, body);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let mut long = Vec::new();
    for file in sources() {
        let mut walk = Functions {
            file: &file.rel,
            found: Vec::new(),
        };
        walk.visit_file(&file.ast);
        for (name, _, len) in walk.found {
            if len > MAX_FN_LINES {
                long.push(format!("{name}: {len} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these functions (at most {MAX_FN_LINES} lines from `fn` to its closing brace):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_layers_can_be_read_from_the_unit_graph() {
    let files = sources();
    let modules = Modules::collect(&files);
    let edges = references(&files, &modules);
    let mut out = String::new();
    for (unit, deps) in unit_graph(&edges, false) {
        let deps: Vec<&str> = deps.keys().map(String::as_str).collect();
        writeln!(out, "{unit} -> {}", deps.join(" ")).expect("writing to a String");
    }
    println!("{out}");
    assert!(out.contains("hub ->"), "the walk found no hub: {out}");
}
