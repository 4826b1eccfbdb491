use super::*;

#[test]
fn placeholder_compiles() {
    assert_eq!(HDR_LEN, 24);
}
