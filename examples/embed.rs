//! kiln embedded in a deploy tool: plan an app, build it with live
//! progress, push it, retry on network failures, cancel on Ctrl-C or a
//! timeout. Copy it as a starting point.
//!
//!     cargo run --example embed -- APP_DIR REGISTRY/NAME:TAG [--timeout SECONDS]
//!
//! Exit codes: 0 pushed, 3 no provider for the app, 4 a build step failed,
//! 130 cancelled, 1 anything else (kiln's own codes, [`kiln::Error::exit_code`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiln::{BuildRequest, Error, Event, PlanRequest, Progress};

/// Shows progress as it happens: steps as they start and end, the build
/// steps' output, messages. Called from kiln's worker threads.
fn show(event: &Event) {
    match event {
        Event::Steps { total } => println!("build: {total} steps"),
        Event::Start {
            name, step: true, ..
        } => println!("step started: {name}"),
        Event::Finish {
            status, seconds, ..
        } if status != "done" || *seconds > 0.05 => {
            println!("  ended: {status} after {seconds:.1}s")
        }
        Event::Log { line, .. } => println!("  | {line}"),
        Event::Message { text, .. } => println!("kiln: {text}"),
        _ => {}
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (app, reference, timeout) = match &args[..] {
        [app, r] => (app, r, None),
        [app, r, flag, secs] if flag == "--timeout" => match secs.parse::<f64>() {
            Ok(s) => (app, r, Some(Duration::from_secs_f64(s))),
            Err(_) => return usage(),
        },
        _ => return usage(),
    };
    let app = PathBuf::from(app);

    // 1. The plan: what kiln would build, before building it.
    let plan = match kiln::plan(&app, &PlanRequest::default()) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    println!(
        "plan: providers {:?}, start command {:?}",
        plan.providers.clone().unwrap_or_default(),
        plan.start.as_ref().and_then(|s| s.cmd.clone())
    );

    // 2. Cancellation: one flag, set by Ctrl-C or by the timeout.
    let cancel = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone()) {
        eprintln!("cannot watch Ctrl-C: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(t) = timeout {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(t);
            cancel.store(true, Ordering::SeqCst);
        });
    }

    // 3. Build and push, with live progress, retrying what is transient.
    let progress = Progress::with_sink(Arc::new(show));
    let req = BuildRequest {
        context: app,
        auto: true,
        tags: vec![reference.clone()],
        push: true,
        cancel: Some(cancel),
        ..BuildRequest::default()
    };
    let mut attempt = 1;
    let built = loop {
        match kiln::build(&req, &progress) {
            Ok(b) => break b,
            Err(e) if e.is_transient() && attempt < 3 => {
                eprintln!("attempt {attempt} failed ({e}); retrying in {attempt} s");
                std::thread::sleep(Duration::from_secs(attempt));
                attempt += 1;
            }
            Err(e) => return fail(&e),
        }
    };
    println!("built {} ({} bytes)", built.digest, built.image.size());
    for p in &built.pushed {
        println!("pushed {p}");
    }
    ExitCode::SUCCESS
}

/// Reports a failure the way a deploy tool would branch on it.
fn fail(e: &Error) -> ExitCode {
    match e {
        Error::StepFailed {
            step,
            exit_code,
            tail,
            ..
        } => {
            eprintln!("the step {step} failed with exit code {exit_code}; its last lines:");
            for l in tail {
                eprintln!("  {l}");
            }
        }
        Error::Cancelled { .. } => eprintln!("cancelled"),
        Error::NoProvider { message } => eprintln!("not an app kiln knows how to build: {message}"),
        Error::BadInput {
            file: Some(f),
            line,
            message,
        } => eprintln!("{}:{}: {message}", f.display(), line.unwrap_or(0)),
        other => eprintln!("error: {other}"),
    }
    ExitCode::from(e.exit_code())
}

fn usage() -> ExitCode {
    eprintln!("usage: embed APP_DIR REGISTRY/NAME:TAG [--timeout SECONDS]");
    ExitCode::from(2)
}
