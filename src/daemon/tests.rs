use super::*;

async fn lines_of(input: &[u8]) -> Vec<String> {
    let mut r = BufReader::new(input);
    let mut out = Vec::new();
    loop {
        match read_line_capped(&mut r).await.unwrap() {
            Line::Eof => return out,
            Line::TooLong => out.push("<too long>".into()),
            Line::Complete(l) => out.push(String::from_utf8(l).unwrap()),
        }
    }
}

#[tokio::test]
async fn lines_are_capped_and_the_rest_is_skipped() {
    let mut input = b"a\n".to_vec();
    input.extend(vec![b'x'; MAX_LINE + 10]);
    input.extend(b"\nb\nlast");
    assert_eq!(lines_of(&input).await, ["a", "<too long>", "b", "last"]);
}
