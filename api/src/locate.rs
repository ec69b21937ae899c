//! Maps a field path such as `listeners[0].routes[2].backends[0].weight` to
//! the line of a YAML text where it is written, so `check` can point at it.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

pub(crate) struct Locator {
    lines: HashMap<String, usize>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Collect {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Collect {
    /// The path of the node that starts now, recording its line.
    fn enter(&mut self, line: usize) -> Option<String> {
        let path = match self.stack.last_mut() {
            None => return Some(String::new()),
            Some(Frame::Map { key: None, .. }) => return None, // this node is a key
            Some(Frame::Map { path, key }) => {
                let k = key.take().unwrap_or_default();
                if path.is_empty() {
                    k
                } else {
                    format!("{path}.{k}")
                }
            }
            Some(Frame::Seq { path, index }) => {
                *index += 1;
                let p = format!("{path}[{}]", *index - 1);
                self.lines.entry(p.clone()).or_insert(line);
                p
            }
        };
        Some(path)
    }
}

impl MarkedEventReceiver for Collect {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map {
                    path,
                    key: key @ None,
                }) = self.stack.last_mut()
                {
                    let p = if path.is_empty() {
                        value.clone()
                    } else {
                        format!("{path}.{value}")
                    };
                    self.lines.entry(p).or_insert(line);
                    *key = Some(value);
                } else {
                    self.enter(line);
                }
            }
            Event::MappingStart(..) => {
                let path = self.enter(line).unwrap_or_default();
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.enter(line).unwrap_or_default();
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Alias(_) => {
                self.enter(line);
            }
            _ => {}
        }
    }
}

impl Locator {
    pub(crate) fn new(text: &str) -> Self {
        let mut c = Collect::default();
        let _ = Parser::new_from_str(text).load(&mut c, false);
        Locator { lines: c.lines }
    }

    /// The line where `text` stops being one YAML document: a syntax error,
    /// or the start of a second document. For the parse errors serde_yaml_ng
    /// reports without a location (such as "more than one document").
    pub(crate) fn break_line(text: &str) -> Option<usize> {
        let mut parser = Parser::new_from_str(text);
        let mut documents = 0;
        loop {
            match parser.next_token() {
                Ok((Event::DocumentStart, mark)) => {
                    documents += 1;
                    if documents == 2 {
                        return Some(mark.line());
                    }
                }
                Ok((Event::StreamEnd, _)) => return None,
                Ok(_) => {}
                Err(e) => return Some(e.marker().line()),
            }
        }
    }

    /// The line of `path`, or of its nearest written ancestor.
    pub(crate) fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}
