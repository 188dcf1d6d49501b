//! Unit tests of `upload`.
use super::*;

fn parts_of(part_size: usize, chunks: &[usize]) -> (Vec<usize>, usize) {
    let mut buffer = PartBuffer::new(part_size);
    let mut parts = Vec::new();
    for &length in chunks {
        let chunk = vec![0u8; length];
        let mut data = &chunk[..];
        while let Some(part) = buffer.fill(&mut data) {
            parts.push(part.len());
        }
    }
    (parts, buffer.finish().len())
}

#[test]
fn bytes_fill_parts_of_exactly_the_part_size() {
    assert_eq!(parts_of(10, &[7, 7, 7, 7]), (vec![10, 10], 8));
}

#[test]
fn exactly_one_part_of_bytes_stays_a_single_object() {
    assert_eq!(parts_of(10, &[4, 6]), (vec![], 10));
}

#[test]
fn one_byte_over_a_part_makes_two() {
    assert_eq!(parts_of(10, &[11]), (vec![10], 1));
}

#[test]
fn a_chunk_larger_than_several_parts_is_split() {
    assert_eq!(parts_of(10, &[35]), (vec![10, 10, 10], 5));
}

#[test]
fn a_sent_part_is_filled_again_with_the_next_one() {
    let mut buffer = PartBuffer::new(10);
    let mut data: &[u8] = &[1; 11];
    let first = buffer.fill(&mut data).expect("a full part");
    let address = first.as_ptr();
    let unshared = first.try_into_mut().expect("nothing else holds the part");
    buffer.recycle(Vec::from(unshared));
    assert!(buffer.fill(&mut data).is_none());

    let mut more: &[u8] = &[2; 10];
    let second = buffer.fill(&mut more).expect("a full part");

    assert_eq!(second.as_ptr(), address);
    assert_eq!(&second[..], &[[1].as_slice(), &[2; 9]].concat()[..]);
}

#[test]
fn a_part_still_shared_is_not_recycled() {
    let mut buffer = PartBuffer::new(10);
    let mut data: &[u8] = &[1; 11];
    let first = buffer.fill(&mut data).expect("a full part");
    let elsewhere = first.clone();

    assert!(first.try_into_mut().is_err());
    assert_eq!(elsewhere.len(), 10);
    assert!(buffer.spare.is_none());
}
