//! Text ↔ token ids, from a Hugging Face `tokenizer.json` or rebuilt from a GGUF file's vocabulary.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::LoadError;

/// A tokenizer plus the file it came from, so encoding errors can name it.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: PathBuf,
}

/// The unknown-token name of word-level vocabularies, which is never in them, so that an unknown
/// word fails to encode instead of becoming a token.
const NO_UNKNOWN_TOKEN: &str = "<not in the vocabulary>";

/// GGUF token types llama.cpp writes (`tokenizer.ggml.token_type`) that mark special tokens.
const GGUF_CONTROL: i32 = 3;
const GGUF_USER_DEFINED: i32 = 4;

/// Llama-3's pre-tokenizer split (digits in groups of up to three).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pre-tokenizer split (one digit per token).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, LoadError> {
        if !path.exists() {
            return Err(LoadError::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer.json not found")));
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| LoadError::Tokenizer { path: path.into(), message: e.to_string() })?;
        Ok(Self { inner, source: path.into() })
    }

    /// Rebuilds the byte-level BPE tokenizer llama.cpp stores in GGUF metadata: tokens, merges,
    /// special tokens (control and user-defined types) and the pre-tokenizer named by
    /// `tokenizer.ggml.pre` (`gpt2`, `smollm`, `llama-bpe`, `qwen2`).
    pub fn from_gguf(file: &gguf::GgufFile) -> Result<Self, LoadError> {
        let path = file.path().to_path_buf();
        let err = |message: String| LoadError::Tokenizer { path: path.clone(), message };
        let model = file.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(err(format!("tokenizer.ggml.model `{model}` is not supported (only byte-level BPE, `gpt2`)")));
        }
        let tokens = file.get_str_array("tokenizer.ggml.tokens")?;
        let merges = file
            .get_str_array("tokenizer.ggml.merges")?
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| err(format!("tokenizer.ggml.merges[{i}] `{m}` is not two tokens separated by a space")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| err(format!("building BPE: {e}")))?;

        let pre = match file.metadata("tokenizer.ggml.pre") {
            Some(v) => v.as_str().ok_or_else(|| err("tokenizer.ggml.pre is not a string".into()))?.to_string(),
            None => "gpt2".to_string(),
        };
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
            "gpt2" | "default" => byte_level.into(),
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            "llama-bpe" | "llama3" => regex_then_bytes(LLAMA3_PATTERN).map_err(&err)?,
            "qwen2" => regex_then_bytes(QWEN2_PATTERN).map_err(&err)?,
            other => return Err(err(format!("pre-tokenizer `{other}` (tokenizer.ggml.pre) is not supported"))),
        };

        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevel::default()));
        if let Ok(types) = file.get_i32_array("tokenizer.ggml.token_type") {
            let special: Vec<AddedToken> = tokens
                .iter()
                .zip(types)
                .filter(|(_, t)| matches!(**t, GGUF_CONTROL | GGUF_USER_DEFINED))
                .map(|(tok, _)| AddedToken::from(tok.clone(), true))
                .collect();
            inner.add_special_tokens(special).map_err(|e| err(format!("adding special tokens: {e}")))?;
        }
        Ok(Self { inner, source: path })
    }

    /// A word-level tokenizer over `vocab` (a compiled model's symbols): whitespace separates
    /// tokens, and a word outside the vocabulary is an encoding error. `source` names it in errors.
    pub fn word_level(vocab: &BTreeMap<String, u32>, source: &Path) -> Result<Self, LoadError> {
        let err = |message: String| LoadError::Tokenizer { path: source.into(), message };
        let model = WordLevel::builder()
            .vocab(vocab.iter().map(|(t, &id)| (t.clone(), id)).collect())
            .unk_token(NO_UNKNOWN_TOKEN.into())
            .build()
            .map_err(|e| err(format!("building the word-level vocabulary: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(WhitespaceSplit));
        Ok(Self { inner, source: source.into() })
    }

    /// Token ids of `text`, adding no BOS or other special token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LoadError> {
        let encoding =
            self.inner.encode(text, false).map_err(|e| LoadError::Tokenizer { path: self.source.clone(), message: format!("encoding {text:?}: {e}") })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids` (special tokens kept), for printing.
    pub fn decode(&self, ids: &[u32]) -> Result<String, LoadError> {
        self.inner.decode(ids, false).map_err(|e| LoadError::Tokenizer { path: self.source.clone(), message: format!("decoding {ids:?}: {e}") })
    }

    /// Id of an exact token string, e.g. `<|im_start|>`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// A regex split (isolating each match) followed by byte-level mapping without its own regex,
/// the layout Hugging Face uses for Llama-3 and Qwen2 tokenizers.
fn regex_then_bytes(pattern: &str) -> Result<PreTokenizerWrapper, String> {
    let split = Split::new(SplitPattern::Regex(pattern.into()), SplitDelimiterBehavior::Isolated, false).map_err(|e| format!("pre-tokenizer regex: {e}"))?;
    Ok(Sequence::new(vec![split.into(), ByteLevel::new(false, false, false).into()]).into())
}
