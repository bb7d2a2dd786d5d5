//! One full frame of the review screen for a generated 2,000-step plan,
//! rendered into a 160×48 test backend. Target: under 5 ms.

use std::sync::Arc;

use plandeck::tui::app::{App, Msg};
use plandeck::tui::views;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn main() {
    divan::main();
}

fn app(n: usize) -> App {
    let text = plandeck::plan::generate::random_dag(n, 3, 42, "true");
    let plan = plandeck::plan::from_text("bench.json", &text).expect("valid");
    let mut app = App::new(true, (160, 48));
    app.update(Msg::PlanLoaded {
        path: "bench.json".into(),
        result: Ok((Arc::new(plan), Vec::new())),
    });
    app
}

#[divan::bench(args = [2_000])]
fn review_frame_160x48(bencher: divan::Bencher, n: usize) {
    let app = app(n);
    let mut terminal = Terminal::new(TestBackend::new(160, 48)).expect("terminal");
    bencher.bench_local(|| {
        terminal
            .draw(|f| views::draw(f, divan::black_box(&app)))
            .expect("draws");
    });
}

#[divan::bench(args = [2_000])]
fn map_frame_160x48(bencher: divan::Bencher, n: usize) {
    let mut app = app(n);
    app.update(Msg::Key(ratatui::crossterm::event::KeyEvent::new(
        ratatui::crossterm::event::KeyCode::Char('v'),
        ratatui::crossterm::event::KeyModifiers::NONE,
    )));
    let mut terminal = Terminal::new(TestBackend::new(160, 48)).expect("terminal");
    bencher.bench_local(|| {
        terminal
            .draw(|f| views::draw(f, divan::black_box(&app)))
            .expect("draws");
    });
}
