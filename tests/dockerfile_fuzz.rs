//! Property tests: no input makes the parser, the expander, the lowering
//! or the ignore-file reader panic, and plain words expand to themselves.

use kiln::dockerfile::{self, BuildArgs, shell::Lexer};
use proptest::prelude::*;

fn dockerfile_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("FROM scratch AS a".to_string()),
        Just("FROM $B".to_string()),
        Just("ARG B=scratch".to_string()),
        Just("RUN <<EOF".to_string()),
        Just("EOF".to_string()),
        Just("COPY --from=a /x /y".to_string()),
        Just("# escape=`".to_string()),
        Just("ENV A=\"${B:-x}\" C=$A".to_string()),
        "[A-Za-z$={}:\\-+?#%\"' \\\\`\\[\\]<,/.µ\t]{0,30}",
    ];
    prop::collection::vec(line, 0..12).prop_map(|l| l.join("\n"))
}

proptest! {
    #[test]
    fn parse_and_lower_never_panic(text in dockerfile_text()) {
        if let Ok(df) = dockerfile::parse("Dockerfile", &text) {
            let _ = dockerfile::lower::lower(&df, &text, None, &BuildArgs::default(), &dockerfile::NoResolver);
        }
    }

    #[test]
    fn expansion_never_panics(word in "[a-z$={}:\\-+?#%\"' \\\\]{0,24}") {
        let env = |k: &str| if k == "a" { Some("v".to_string()) } else { None };
        let _ = Lexer::default().process_word(&word, &env);
        let _ = Lexer::default().process_words(&word, &env);
        let _ = Lexer::new('`').process_heredoc(&word, &env);
    }

    #[test]
    fn plain_words_are_unchanged(word in "[A-Za-z0-9/._,:@+-]{0,24}") {
        let out = Lexer::default().process_word(&word, &kiln::dockerfile::shell::NoEnv).unwrap();
        prop_assert_eq!(out, word);
    }

    #[test]
    fn ignore_files_never_panic(text in "[a-z*?!/.\\[\\]\\\\#\n ]{0,40}", path in "[a-z/.]{1,12}") {
        if let Ok(m) = kiln::context::ignore::Matcher::parse(&text, ".dockerignore") {
            let _ = m.excludes(&path);
        }
    }
}
