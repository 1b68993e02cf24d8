"""A long prompt's 75-token chunks, as A1111 cuts them: full chunks, BREAK, and the tail after
a comma near the end of a chunk moved to the next one."""

from ldm.prompts.chunks import chunk_prompt
from ldm.prompts.syntax import parse_attention

COMMA = 0


def word_tokens(text: str) -> list[int]:
    """Test tokenizer: a comma is token 0, every other word one token (its number)."""
    return [COMMA if word == "," else int(word) for word in text.replace(",", " , ").split()]


def chunks_of(prompt: str, **options):
    return chunk_prompt(parse_attention(prompt), word_tokens, COMMA, **options)


def words(n: int, start: int = 1) -> str:
    return " ".join(str(i) for i in range(start, start + n))


def test_a_150_token_prompt_is_two_full_chunks():
    first, second = chunks_of(words(150))
    assert first.tokens == list(range(1, 76)) and second.tokens == list(range(76, 151))
    assert first.weights == [1.0] * 75


def test_one_more_token_starts_a_third_chunk_and_an_empty_prompt_is_one_empty_chunk():
    assert [len(c.tokens) for c in chunks_of(words(151))] == [75, 75, 1]
    (empty,) = chunks_of("")
    assert empty.tokens == [] and empty.weights == []


def test_break_ends_a_chunk_wherever_it_stands():
    assert [c.tokens for c in chunks_of("1 2 BREAK 3")] == [[1, 2], [3]]
    assert [c.tokens for c in chunks_of("BREAK 3")] == [[], [3]]  # a leading BREAK leaves an empty chunk
    assert [c.tokens for c in chunks_of("1 2 BREAK")] == [[1, 2]]  # a trailing one adds none
    assert [c.tokens for c in chunks_of("1 BREAK BREAK 2")] == [[1], [], [2]]


def test_weights_follow_their_tokens():
    (chunk,) = chunks_of("1 (2 3:1.5) [4]")
    assert chunk.tokens == [1, 2, 3, 4] and chunk.weights == [1.0, 1.5, 1.5, 1 / 1.1]


def test_the_words_after_a_comma_near_the_end_move_to_the_next_chunk():
    prompt = f"{words(60)}, {words(20, start=100)}"  # comma at index 60; the chunk fills 14 tokens later
    first, second = chunks_of(prompt)
    assert first.tokens == list(range(1, 61)) + [COMMA]
    assert second.tokens == list(range(100, 120))


def test_a_comma_further_back_than_20_tokens_moves_nothing():
    prompt = f"{words(50)}, {words(40, start=100)}"  # comma at index 50: 25 tokens before the end
    first, second = chunks_of(prompt)
    assert len(first.tokens) == 75 and first.tokens[50] == COMMA
    assert second.tokens == list(range(124, 140))
    assert [len(c.tokens) for c in chunks_of(prompt, backtrack=0)] == [75, 16]


def embedding_tokens(text: str) -> list:
    """As word_tokens, with "emb" a 3-vector embedding (its places 900-902, kept together)."""
    return [unit for word in text.split() for unit in ([(900, 901, 902)] if word == "emb" else word_tokens(word))]


def test_an_embedding_that_would_cross_the_chunk_end_starts_the_next_chunk():
    first, second = chunk_prompt(parse_attention(f"{words(73)} (emb:1.2) 500"), embedding_tokens, COMMA)
    assert first.tokens == list(range(1, 74))  # 2 places left: the embedding's 3 vectors go on
    assert second.tokens == [900, 901, 902, 500] and second.weights == [1.2, 1.2, 1.2, 1.0]
    (whole,) = chunk_prompt(parse_attention(f"{words(72)} emb"), embedding_tokens, COMMA)
    assert whole.tokens[-3:] == [900, 901, 902] and len(whole.tokens) == 75  # exactly fits
