//! Synthetic tasks: seeded generators of token batches whose answers are known exactly.
//!
//! Every task is a classification read at the last `n_out` positions of the sequence. Each one
//! says whether it needs positional information: without it attention sees a set, so a task whose
//! answer depends on order cannot be learned above chance (see the `permutation` experiment).
//!
//! | task | input | target | needs position |
//! |---|---|---|---|
//! | `recall` | P tokens, each one (key, value) pair, id = key·V + value; then a query key | the value paired with the query key | no |
//! | `recall-adjacent` | k₁ v₁ k₂ v₂ … k_P v_P, then a query key | the value after the matching key | yes |
//! | `copy` | x₁ … x_m, then m blanks | x₁ … x_m | yes |
//! | `reverse` | x₁ … x_m, then m blanks | x_m … x₁ | yes |
//! | `sort` | x₁ … x_m, then m blanks | x sorted ascending | yes |
//! | `majority` | x₁ … x_m, then a query token | the most frequent symbol (ties: the smallest) | no |
//! | `count` | x₁ … x_m, then a query naming symbol s | how many times s occurs (0 … m) | no |
//! | `position-lookup` | x₁ … x_m, then a query naming position p | x_p | yes |
//! | `next-token-shift` | x₁ … x_m SEP y₁ … y_m, y_k = x_k + 1 (mod V) | the next token at every position: x₂ … x_m SEP y₁ … y_m END | yes |
//! | `bigram-backcopy` | `<s>` x₁ … x_{m−1} | the next token at every position: x₁ … x_m | yes |
//! | `repeat-segment` | a segment of r random symbols, repeated to fill m tokens | the next token at every position | yes |
//! | `mqar` | k₁ v₁ … k_P v_P, then the P keys in a random order | the value of each queried key | yes |
//! | `mqar-paired` | P tokens, each one (key, value) pair as in `recall`, then the P keys in a random order | the value of each queried key | no |
//!
//! `recall` is the one-layer-solvable form of associative recall: one attention layer answers
//! it by matching the query to the key inside a token. `recall-adjacent` is the classic form,
//! which needs a value to be read *next to* its key, an induction-style circuit of two layers
//! (Olsson et al. 2022, "In-context Learning and Induction Heads").
//!
//! `next-token-shift` is language modelling in miniature: every position predicts the token after
//! it. Its first half is random, so a model that sees only the past cannot beat ln(V) there, while
//! its second half is the first shifted by one symbol, y_k = x_k + 1 (mod V), and can be predicted
//! exactly from the past. A model that sees the future (no causal mask) reads every answer one
//! position ahead instead (see the `causal_mask` experiment); the closing END makes that true at
//! every position, and the shift keeps the earlier copy from holding the same answer, so nothing
//! rewards it for learning the rule.
//!
//! `bigram-backcopy` is Guo et al.'s Bigram-Backcopy task (2024, "Active-Dormant Attention Heads:
//! Mechanistically Demystifying Extreme-Token Phenomena in LLMs", §2), the toy on which attention
//! sinks form. A sequence starts with `<s>`; after one of the [`TRIGGERS`] trigger tokens the
//! next token copies the token before the trigger (backcopy), and after any other token it is
//! drawn from a fixed bigram table ([`bigram_successors`]). Predicting a bigram needs only the
//! current token, so a head has nothing to read for most queries; predicting a backcopy needs the
//! previous one. Guo et al. estimate their bigram table from text and take the most frequent
//! tokens as triggers; here the table is drawn once from a fixed seed, and every other token leads
//! to a trigger with probability [`TRIGGER_P`], so that triggers are the most frequent tokens.
//! x₁ is drawn uniformly from the non-triggers, so a trigger always has a non-trigger before it.
//!
//! `repeat-segment` is the induction-head task (Olsson et al. 2022). The segment length r is drawn
//! for each sequence from ⌈m/4⌉ … ⌊m/2⌋ ([`Task::segment_lengths`]), so that the distance back to
//! the previous copy differs between sequences and no fixed offset predicts the repeat: a model
//! must find the previous occurrence of the current token and read what followed it. The
//! segment's symbols are drawn independently, as Olsson et al.'s random tokens are: with distinct
//! symbols, the r − 1 tokens after the previous occurrence's successor would be every symbol of
//! the segment but the answer, and a trial two-layer model learned to predict "the segment's
//! symbol not seen lately" with no prefix-matching head at all. A symbol may then occur twice in a
//! segment, and its successor is ambiguous; a vocabulary much larger than the segment keeps that
//! rare.
//!
//! `mqar` is Zoology's multi-query associative recall (Arora et al. 2023, §3): P (key, value)
//! pairs, then every key once more as a query, each answered with its value. Keys are distinct
//! and drawn from `keys` key tokens, values are distinct and drawn from `symbols` value tokens,
//! as in Zoology's generator. Zoology places the queries at power-law-distributed gaps among
//! random filler tokens and reads answers at the queries' positions; here the P queries follow
//! the pairs directly and are read as the last P positions, so the sequence is 3P tokens long.
//! `mqar-paired` gives each pair as one token, id = key·V + value, as `recall` does: one
//! attention layer can then answer every query by matching it to the key inside a token, with no
//! previous-token step to bind a value to its key (the step Zoology's recurrent models take with
//! a short convolution before their attention).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::util::cli::{UnknownName, named_enum};
use crate::util::rng::{HostRng, stable_hash};

/// Which task to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    Recall,
    RecallAdjacent,
    Copy,
    Reverse,
    Sort,
    Majority,
    Count,
    PositionLookup,
    NextTokenShift,
    BigramBackcopy,
    RepeatSegment,
    Mqar,
    MqarPaired,
}

named_enum!(TaskKind, "task", {
    Recall => "recall",
    RecallAdjacent => "recall-adjacent",
    Copy => "copy",
    Reverse => "reverse",
    Sort => "sort",
    Majority => "majority",
    Count => "count",
    PositionLookup => "position-lookup",
    NextTokenShift => "next-token-shift",
    BigramBackcopy => "bigram-backcopy",
    RepeatSegment => "repeat-segment",
    Mqar => "mqar",
    MqarPaired => "mqar-paired",
});

impl TaskKind {
    /// Whether the answer depends on where tokens are, not only on which tokens there are.
    pub fn needs_position(self) -> bool {
        !matches!(
            self,
            TaskKind::Recall | TaskKind::Majority | TaskKind::Count | TaskKind::MqarPaired
        )
    }
}

/// Why a task cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    UnknownKind(#[from] UnknownName),
    #[error("{field} must be at least {min}, got {value}")]
    TooSmall {
        field: &'static str,
        min: usize,
        value: usize,
    },
    #[error("length = {length} pairs need at least as many distinct keys, got keys = {keys}")]
    TooFewKeys { length: usize, keys: usize },
    #[error(
        "{field} = {value} must be at least {length} so that a sequence's {what} can be distinct"
    )]
    TooFewDistinct {
        field: &'static str,
        value: usize,
        length: usize,
        what: &'static str,
    },
    #[error("only the recall tasks use keys; the {kind} task would ignore keys = {keys}")]
    UnusedKeys { kind: TaskKind, keys: usize },
}

/// A task's sizes, as written in a config's `[task]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub kind: TaskKind,
    /// Items in the part to be read: (key, value) pairs for recall, symbols otherwise.
    pub length: usize,
    /// Alphabet size: the values for recall, the symbols otherwise.
    pub symbols: usize,
    /// Distinct keys (recall only). Default: `symbols`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<usize>,
}

impl TaskConfig {
    pub fn new(kind: TaskKind, length: usize, symbols: usize) -> Self {
        Self {
            kind,
            length,
            symbols,
            keys: None,
        }
    }

    fn keys(&self) -> usize {
        self.keys.unwrap_or(self.symbols)
    }

    /// Checks the sizes; [`Task::new`] calls it.
    pub fn validate(&self) -> Result<(), TaskError> {
        let too_small = |field, min, value| TaskError::TooSmall { field, min, value };
        if self.length < 1 {
            return Err(too_small("length", 1, self.length));
        }
        if self.symbols < 2 {
            return Err(too_small("symbols", 2, self.symbols));
        }
        if self.kind == TaskKind::BigramBackcopy && self.symbols < TRIGGERS + 3 {
            return Err(too_small("symbols", TRIGGERS + 3, self.symbols));
        }
        if self.kind == TaskKind::RepeatSegment && self.length < 4 {
            return Err(too_small("length", 4, self.length));
        }
        if matches!(self.kind, TaskKind::Mqar | TaskKind::MqarPaired) && self.symbols < self.length
        {
            return Err(TaskError::TooFewDistinct {
                field: "symbols",
                value: self.symbols,
                length: self.length,
                what: "values",
            });
        }
        let recall = matches!(
            self.kind,
            TaskKind::Recall | TaskKind::RecallAdjacent | TaskKind::Mqar | TaskKind::MqarPaired
        );
        if let (false, Some(keys)) = (recall, self.keys) {
            return Err(TaskError::UnusedKeys {
                kind: self.kind,
                keys,
            });
        }
        if recall && self.keys() < self.length {
            return Err(TaskError::TooFewKeys {
                length: self.length,
                keys: self.keys(),
            });
        }
        Ok(())
    }
}

/// A batch of sequences and the answers read at their last `n_out` positions.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `[batch, seq_len]`, row-major.
    pub tokens: Vec<i64>,
    /// `[batch, n_out]`, row-major: the class expected at each of the last `n_out` positions.
    pub targets: Vec<i64>,
    pub batch: usize,
    pub seq_len: usize,
    pub n_out: usize,
}

impl Batch {
    /// `[batch, seq_len]` token ids.
    pub fn tokens(&self, device: &Device) -> Tensor<2, Int> {
        Tensor::from_data(
            TensorData::new(self.tokens.clone(), [self.batch, self.seq_len]),
            device,
        )
    }

    /// `[batch·n_out]` class ids, in the order of the model's flattened outputs.
    pub fn targets(&self, device: &Device) -> Tensor<1, Int> {
        Tensor::from_data(
            TensorData::new(self.targets.clone(), [self.batch * self.n_out]),
            device,
        )
    }
}

/// Trigger tokens of `bigram-backcopy`: symbols 0, 1 and 2 (Guo et al.'s k = 3).
pub const TRIGGERS: usize = 3;
/// Probability that a non-trigger token of `bigram-backcopy` is followed by a trigger.
pub const TRIGGER_P: f64 = 0.2;
/// Seed of `bigram-backcopy`'s bigram table: fixed, so every run and seed learns one language.
const BIGRAM_TABLE_SEED: u64 = 0xB16_8A3;

/// `bigram-backcopy`'s bigram table for a vocabulary of `symbols` tokens: for each token, its
/// successors and their probabilities (empty for a trigger, which is followed by a backcopy).
/// Each non-trigger leads to trigger (a mod 3) with [`TRIGGER_P`] and to three distinct
/// non-triggers with 0.45, 0.25 and 0.10, drawn once from a fixed seed.
pub fn bigram_successors(symbols: usize) -> Vec<Vec<(usize, f64)>> {
    let mut rng = HostRng::new(BIGRAM_TABLE_SEED ^ symbols as u64);
    let others = symbols - TRIGGERS;
    (0..symbols)
        .map(|a| {
            if a < TRIGGERS {
                return Vec::new();
            }
            let mut next = vec![(a % TRIGGERS, TRIGGER_P)];
            let picks = rng.permutation(others);
            next.extend(
                picks
                    .into_iter()
                    .take(3)
                    .zip([0.45, 0.25, 0.10])
                    .map(|(b, p)| (TRIGGERS + b, p)),
            );
            next
        })
        .collect()
}

/// One sequence in this many is held out for evaluation (see [`Task::is_held_out`]).
pub const HELD_OUT_ONE_IN: u64 = 8;
/// Draws tried for a sequence on the wanted side of the split before taking the last one.
pub const MAX_TRIES: usize = 1000;

/// A validated task that draws batches.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    config: TaskConfig,
}

impl Task {
    pub fn new(config: TaskConfig) -> Result<Self, TaskError> {
        config.validate()?;
        Ok(Self { config })
    }

    pub fn kind(&self) -> TaskKind {
        self.config.kind
    }

    /// The configured length: pairs for recall, symbols otherwise. In every task but
    /// `recall-adjacent`, the first `length` positions hold items drawn independently of where
    /// they are.
    pub fn length(&self) -> usize {
        self.config.length
    }

    /// Number of distinct token ids.
    pub fn vocab(&self) -> usize {
        let (m, a) = (self.config.length, self.config.symbols);
        match self.config.kind {
            // pair tokens, then one query token per key
            TaskKind::Recall => self.config.keys() * a + self.config.keys(),
            // keys, then values; the query is a key token
            TaskKind::RecallAdjacent => self.config.keys() + a,
            // symbols, then the blank
            TaskKind::Copy | TaskKind::Reverse | TaskKind::Sort => a + 1,
            // symbols, then the query
            TaskKind::Majority => a + 1,
            // symbols, then one query per symbol
            TaskKind::Count => 2 * a,
            // symbols, then one query per position
            TaskKind::PositionLookup => a + m,
            // symbols, then the separator and the end
            TaskKind::NextTokenShift => a + 2,
            // symbols, then <s>
            TaskKind::BigramBackcopy => a + 1,
            TaskKind::RepeatSegment => a,
            // keys, then values; the queries are key tokens
            TaskKind::Mqar => self.config.keys() + a,
            // pair tokens, then one query token per key
            TaskKind::MqarPaired => self.config.keys() * a + self.config.keys(),
        }
    }

    /// Number of output classes.
    pub fn classes(&self) -> usize {
        match self.config.kind {
            TaskKind::Count => self.config.length + 1,
            // the separator and the end are targets too
            TaskKind::NextTokenShift => self.config.symbols + 2,
            _ => self.config.symbols,
        }
    }

    /// Length of every sequence.
    pub fn seq_len(&self) -> usize {
        let m = self.config.length;
        match self.config.kind {
            TaskKind::RecallAdjacent => 2 * m + 1,
            TaskKind::Copy | TaskKind::Reverse | TaskKind::Sort => 2 * m,
            TaskKind::NextTokenShift => 2 * m + 1,
            TaskKind::BigramBackcopy | TaskKind::RepeatSegment => m,
            TaskKind::Mqar => 3 * m,
            TaskKind::MqarPaired => 2 * m,
            _ => m + 1,
        }
    }

    /// Positions read for answers, at the end of the sequence.
    pub fn n_out(&self) -> usize {
        match self.config.kind {
            TaskKind::Copy | TaskKind::Reverse | TaskKind::Sort => self.config.length,
            TaskKind::NextTokenShift => 2 * self.config.length + 1,
            TaskKind::BigramBackcopy
            | TaskKind::RepeatSegment
            | TaskKind::Mqar
            | TaskKind::MqarPaired => self.config.length,
            _ => 1,
        }
    }

    /// Whether training records the induction scores on this task ([`crate::lab::train::HeadInduction`],
    /// [`crate::lab::train::InductionLoss`]): the tasks that are language modelling over
    /// repeated tokens.
    pub fn probes_induction(&self) -> bool {
        self.config.kind == TaskKind::RepeatSegment
    }

    /// The segment lengths `repeat-segment` draws from, uniformly: ⌈m/4⌉ … ⌊m/2⌋, so every
    /// sequence holds at least two copies and the distance back to the previous copy varies.
    pub fn segment_lengths(&self) -> std::ops::RangeInclusive<usize> {
        let m = self.config.length;
        m.div_ceil(4).max(2)..=(m / 2).max(2)
    }

    /// Accuracy of guessing uniformly among the classes.
    pub fn chance(&self) -> f64 {
        1.0 / self.classes() as f64
    }

    /// The best accuracy a model blind to order can reach on `batch`. In position-lookup, copy,
    /// reverse and sort, such a model sees only the multiset of x₁ … x_m (and, for
    /// position-lookup, which p is asked), so its best guess at every answer is the most frequent
    /// symbol, right with probability (largest count) / m. `None` for the other tasks, which either
    /// need no order or are not worked out here.
    pub fn order_blind_accuracy(&self, batch: &Batch) -> Option<f64> {
        use TaskKind as K;
        if !matches!(
            self.kind(),
            K::PositionLookup | K::Copy | K::Reverse | K::Sort
        ) {
            return None;
        }
        let (m, a) = (self.config.length, self.config.symbols);
        let mut total = 0.0;
        for row in batch.tokens.chunks(batch.seq_len) {
            let mut counts = vec![0usize; a];
            row[..m].iter().for_each(|&s| counts[s as usize] += 1);
            total += *counts.iter().max().expect("symbols >= 2") as f64 / m as f64;
        }
        Some(total / batch.batch.max(1) as f64)
    }

    /// `batch` fresh training sequences drawn from `rng`, never from the held-out split
    /// ([`Task::is_held_out`]). Visible inside `lab/` only, where the training loop lives: an
    /// experiment, the explorer or a binary can draw nothing but held-out sequences to judge or
    /// show a model on, so no evaluation can read a training draw by mistake (the compiler
    /// refuses `task.batch(…)` outside `lab/`).
    pub(in crate::lab) fn batch(&self, batch: usize, rng: &mut HostRng) -> Batch {
        self.draw(batch, rng, false)
    }

    /// `batch` sequences from the held-out split, which [`Task::batch`] never draws: a model
    /// trained on this task has not seen them.
    pub fn held_out_batch(&self, batch: usize, rng: &mut HostRng) -> Batch {
        self.draw(batch, rng, true)
    }

    /// Whether a sequence belongs to the held-out split: one in [`HELD_OUT_ONE_IN`] sequences, by
    /// a stable hash of its tokens, the same in every run and for every seed. Rejection keeps
    /// the rest of the distribution as it was; a task with so few distinct sequences that
    /// [`MAX_TRIES`] draws in a row all land on one side takes the last draw anyway, so only
    /// there can the split leak.
    pub fn is_held_out(tokens: &[usize]) -> bool {
        stable_hash(tokens.iter().flat_map(|t| (*t as u64).to_le_bytes())) % HELD_OUT_ONE_IN == 0
    }

    fn draw(&self, batch: usize, rng: &mut HostRng, held_out: bool) -> Batch {
        let (seq_len, n_out) = (self.seq_len(), self.n_out());
        let mut tokens = Vec::with_capacity(batch * seq_len);
        let mut targets = Vec::with_capacity(batch * n_out);
        for _ in 0..batch {
            let mut example = self.example(rng);
            for _ in 1..MAX_TRIES {
                if Task::is_held_out(&example.0) == held_out {
                    break;
                }
                example = self.example(rng);
            }
            let (seq, answer) = example;
            debug_assert_eq!((seq.len(), answer.len()), (seq_len, n_out));
            tokens.extend(seq.into_iter().map(|t| t as i64));
            targets.extend(answer.into_iter().map(|t| t as i64));
        }
        Batch {
            tokens,
            targets,
            batch,
            seq_len,
            n_out,
        }
    }

    /// The task's config.
    pub fn config(&self) -> &TaskConfig {
        &self.config
    }

    /// A readable name for token `id`, for heatmap labels: symbols are `s3`, recall pairs
    /// `k2=v3` and keys `k2`, values `v3`, queries end in `?` (`k2?`, `count s1?`, `pos 4?`),
    /// and the fillers are `_` (blank), `|` (separator), `end`.
    pub fn token_name(&self, id: usize) -> String {
        let (m, a) = (self.config.length, self.config.symbols);
        let keys = self.config.keys();
        match self.config.kind {
            TaskKind::Recall | TaskKind::MqarPaired if id < keys * a => {
                format!("k{}=v{}", id / a, id % a)
            }
            TaskKind::Recall | TaskKind::MqarPaired => format!("k{}?", id - keys * a),
            TaskKind::RecallAdjacent | TaskKind::Mqar if id < keys => format!("k{id}"),
            TaskKind::RecallAdjacent | TaskKind::Mqar => format!("v{}", id - keys),
            TaskKind::BigramBackcopy if id < TRIGGERS => format!("t{id}"),
            TaskKind::BigramBackcopy if id == a => "<s>".into(),
            _ if id < a => format!("s{id}"),
            TaskKind::Copy | TaskKind::Reverse | TaskKind::Sort => "_".into(),
            TaskKind::Majority => "majority?".into(),
            TaskKind::Count => format!("count s{}?", id - a),
            TaskKind::PositionLookup if id - a < m => format!("pos {}?", id - a),
            TaskKind::NextTokenShift if id == a => "|".into(),
            _ => "end".into(),
        }
    }

    /// A readable name for answer class `class`: a count for `count`, else a symbol.
    pub fn class_name(&self, class: usize) -> String {
        match self.config.kind {
            TaskKind::Count => class.to_string(),
            TaskKind::Recall | TaskKind::RecallAdjacent | TaskKind::Mqar | TaskKind::MqarPaired => {
                format!("v{class}")
            }
            TaskKind::NextTokenShift if class == self.config.symbols => "|".into(),
            TaskKind::NextTokenShift if class > self.config.symbols => "end".into(),
            TaskKind::BigramBackcopy if class < TRIGGERS => format!("t{class}"),
            _ => format!("s{class}"),
        }
    }

    /// One sequence and its answers.
    fn example(&self, rng: &mut HostRng) -> (Vec<usize>, Vec<usize>) {
        let (m, a) = (self.config.length, self.config.symbols);
        let symbols = |rng: &mut HostRng| (0..m).map(|_| rng.below(a)).collect::<Vec<_>>();
        match self.config.kind {
            TaskKind::Recall | TaskKind::RecallAdjacent => {
                let n_keys = self.config.keys();
                let keys: Vec<usize> = rng.permutation(n_keys).into_iter().take(m).collect();
                let values = symbols(rng);
                let asked = rng.below(m);
                let mut seq = Vec::with_capacity(self.seq_len());
                if self.config.kind == TaskKind::Recall {
                    seq.extend(keys.iter().zip(&values).map(|(k, v)| k * a + v));
                    seq.push(n_keys * a + keys[asked]);
                } else {
                    for (k, v) in keys.iter().zip(&values) {
                        seq.extend([*k, n_keys + v]);
                    }
                    seq.push(keys[asked]);
                }
                (seq, vec![values[asked]])
            }
            TaskKind::Copy | TaskKind::Reverse | TaskKind::Sort => {
                let x = symbols(rng);
                let mut answer = x.clone();
                match self.config.kind {
                    TaskKind::Reverse => answer.reverse(),
                    TaskKind::Sort => answer.sort_unstable(),
                    _ => {}
                }
                let mut seq = x;
                seq.extend(std::iter::repeat_n(a, m));
                (seq, answer)
            }
            TaskKind::Majority => {
                let mut seq = symbols(rng);
                let mut counts = vec![0usize; a];
                seq.iter().for_each(|&s| counts[s] += 1);
                // max_by_key keeps the last maximum; reversing makes ties go to the smallest id.
                let (winner, _) = counts
                    .iter()
                    .enumerate()
                    .rev()
                    .max_by_key(|&(_, c)| *c)
                    .expect("symbols >= 2");
                seq.push(a);
                (seq, vec![winner])
            }
            TaskKind::Count => {
                let mut seq = symbols(rng);
                // Ask about a symbol that is present half the time, so 0 is not the usual answer.
                let asked = if rng.below(2) == 0 {
                    seq[rng.below(m)]
                } else {
                    rng.below(a)
                };
                let count = seq.iter().filter(|&&s| s == asked).count();
                seq.push(a + asked);
                (seq, vec![count])
            }
            TaskKind::PositionLookup => {
                let mut seq = symbols(rng);
                let p = rng.below(m);
                let answer = seq[p];
                seq.push(a + p);
                (seq, vec![answer])
            }
            TaskKind::NextTokenShift => {
                let x = symbols(rng);
                let mut full = x.clone();
                full.push(a);
                full.extend(x.iter().map(|s| (s + 1) % a));
                full.push(a + 1);
                // Inputs are all but the last token; targets are all but the first.
                (full[..=2 * m].to_vec(), full[1..].to_vec())
            }
            TaskKind::BigramBackcopy => {
                let table = bigram_successors(a);
                let mut full = Vec::with_capacity(m + 1);
                full.push(a); // <s>
                full.push(TRIGGERS + rng.below(a - TRIGGERS));
                while full.len() < m + 1 {
                    let t = full.len() - 1;
                    let current = full[t];
                    let next = if current < TRIGGERS {
                        full[t - 1]
                    } else {
                        let mut u = rng.next_f64();
                        let successors = &table[current];
                        let mut pick = successors[successors.len() - 1].0;
                        for &(b, p) in successors {
                            if u < p {
                                pick = b;
                                break;
                            }
                            u -= p;
                        }
                        pick
                    };
                    full.push(next);
                }
                (full[..m].to_vec(), full[1..].to_vec())
            }
            TaskKind::RepeatSegment => {
                let lengths = self.segment_lengths();
                let r = lengths.start() + rng.below(lengths.end() - lengths.start() + 1);
                let segment = (0..r).map(|_| rng.below(a)).collect::<Vec<_>>();
                let full: Vec<usize> = (0..=m).map(|i| segment[i % r]).collect();
                (full[..m].to_vec(), full[1..].to_vec())
            }
            TaskKind::Mqar | TaskKind::MqarPaired => {
                let n_keys = self.config.keys();
                let keys: Vec<usize> = rng.permutation(n_keys).into_iter().take(m).collect();
                let values: Vec<usize> = rng.permutation(a).into_iter().take(m).collect();
                let order = rng.permutation(m);
                let mut seq = Vec::with_capacity(self.seq_len());
                if self.config.kind == TaskKind::Mqar {
                    for (k, v) in keys.iter().zip(&values) {
                        seq.extend([*k, n_keys + v]);
                    }
                    seq.extend(order.iter().map(|&i| keys[i]));
                } else {
                    seq.extend(keys.iter().zip(&values).map(|(k, v)| k * a + v));
                    seq.extend(order.iter().map(|&i| n_keys * a + keys[i]));
                }
                (seq, order.iter().map(|&i| values[i]).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_sequences_are_never_trained_on_and_repeat_for_a_seed() {
        use std::collections::HashSet;
        for config in [
            TaskConfig::new(TaskKind::Count, 8, 4),
            TaskConfig::new(TaskKind::Reverse, 4, 8),
            TaskConfig {
                keys: Some(12),
                ..TaskConfig::new(TaskKind::Recall, 6, 8)
            },
        ] {
            let task = Task::new(config).unwrap();
            let rows = |b: &Batch| -> Vec<Vec<i64>> {
                b.tokens.chunks(b.seq_len).map(<[i64]>::to_vec).collect()
            };
            let held = task.held_out_batch(512, &mut HostRng::new(7));
            let held_rows: HashSet<Vec<i64>> = rows(&held).into_iter().collect();
            // 100 training batches of 64, as a run draws them.
            let mut rng = HostRng::new(7);
            for _ in 0..100 {
                for row in rows(&task.batch(64, &mut rng)) {
                    assert!(
                        !held_rows.contains(&row),
                        "{}: trained on {row:?}",
                        task.kind()
                    );
                }
            }
            assert_eq!(held, task.held_out_batch(512, &mut HostRng::new(7)));
            assert_ne!(held, task.held_out_batch(512, &mut HostRng::new(8)));
        }
    }

    fn one(kind: TaskKind, length: usize, symbols: usize, seed: u64) -> Batch {
        Task::new(TaskConfig::new(kind, length, symbols))
            .unwrap()
            .batch(1, &mut HostRng::new(seed))
    }

    #[test]
    fn answers_follow_the_rules() {
        for seed in 0..20 {
            let b = one(TaskKind::Reverse, 4, 5, seed);
            let x: Vec<i64> = b.tokens[..4].to_vec();
            assert_eq!(b.tokens[4..], [5, 5, 5, 5]);
            assert_eq!(b.targets, x.iter().rev().copied().collect::<Vec<_>>());

            let b = one(TaskKind::Sort, 4, 5, seed);
            let mut x = b.tokens[..4].to_vec();
            x.sort();
            assert_eq!(b.targets, x);

            let b = one(TaskKind::PositionLookup, 6, 3, seed);
            let p = (b.tokens[6] - 3) as usize;
            assert_eq!(b.targets, [b.tokens[p]]);

            let b = one(TaskKind::Count, 6, 3, seed);
            let s = b.tokens[6] - 3;
            let count = b.tokens[..6].iter().filter(|&&t| t == s).count() as i64;
            assert_eq!(b.targets, [count]);

            // id = key·V + value; the query is V·keys + key.
            let b = one(TaskKind::Recall, 3, 4, seed);
            let key = b.tokens[3] - 4 * 4;
            let pair = b.tokens[..3].iter().find(|&&t| t / 4 == key).unwrap();
            assert_eq!(b.targets, [pair % 4]);

            let b = one(TaskKind::NextTokenShift, 3, 4, seed);
            let x = &b.tokens[..3];
            let y: Vec<i64> = x.iter().map(|s| (s + 1) % 4).collect();
            assert_eq!(b.tokens[3..], [4, y[0], y[1], y[2]]);
            assert_eq!(b.targets, [x[1], x[2], 4, y[0], y[1], y[2], 5]);

            let b = one(TaskKind::RecallAdjacent, 3, 4, seed);
            let key = b.tokens[6];
            let at = b.tokens[..6].iter().position(|&t| t == key).unwrap();
            assert_eq!(b.targets, [b.tokens[at + 1] - 4]);
        }
    }

    #[test]
    fn majority_breaks_ties_towards_the_smallest_symbol() {
        for seed in 0..50 {
            let b = one(TaskKind::Majority, 5, 4, seed);
            let mut counts = [0; 4];
            b.tokens[..5].iter().for_each(|&t| counts[t as usize] += 1);
            let best = *counts.iter().max().unwrap();
            let winner = counts.iter().position(|&c| c == best).unwrap() as i64;
            assert_eq!(b.targets, [winner]);
        }
    }

    #[test]
    fn tokens_stay_inside_the_vocabulary() {
        for kind in TaskKind::ALL {
            let task = Task::new(TaskConfig::new(kind, 5, 6)).unwrap();
            let b = task.batch(16, &mut HostRng::new(7));
            assert_eq!(b.tokens.len(), 16 * task.seq_len());
            assert!(
                b.tokens.iter().all(|&t| (t as usize) < task.vocab()),
                "{kind}"
            );
            assert!(
                b.targets.iter().all(|&t| (t as usize) < task.classes()),
                "{kind}"
            );
        }
    }

    #[test]
    fn only_order_free_tasks_do_without_position() {
        let free: Vec<&str> = TaskKind::ALL
            .into_iter()
            .filter(|k| !k.needs_position())
            .map(TaskKind::name)
            .collect();
        assert_eq!(free, ["recall", "majority", "count", "mqar-paired"]);
    }

    #[test]
    fn order_blind_guessing_beats_chance_only_by_the_mode() {
        let mut rng = HostRng::new(1);
        // m = 2 symbols out of 2: the mode covers both with probability 1/2, one otherwise: 3/4.
        let task = Task::new(TaskConfig::new(TaskKind::PositionLookup, 2, 2)).unwrap();
        let p = task
            .order_blind_accuracy(&task.batch(20_000, &mut rng))
            .unwrap();
        assert!((p - 0.75).abs() < 0.01, "{p}");
        let free = Task::new(TaskConfig::new(TaskKind::Majority, 4, 3)).unwrap();
        assert_eq!(free.order_blind_accuracy(&free.batch(10, &mut rng)), None);
    }

    #[test]
    fn same_seed_same_batch() {
        let task = Task::new(TaskConfig::new(TaskKind::Recall, 4, 8)).unwrap();
        assert_eq!(
            task.batch(8, &mut HostRng::new(3)),
            task.batch(8, &mut HostRng::new(3))
        );
    }

    #[test]
    fn bad_sizes_are_named() {
        let err = Task::new(TaskConfig {
            keys: Some(2),
            ..TaskConfig::new(TaskKind::Recall, 3, 4)
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "length = 3 pairs need at least as many distinct keys, got keys = 2"
        );
        assert!(Task::new(TaskConfig::new(TaskKind::Copy, 0, 4)).is_err());
    }

    #[test]
    fn bigram_backcopy_copies_after_triggers_and_follows_the_table_elsewhere() {
        let task = Task::new(TaskConfig::new(TaskKind::BigramBackcopy, 24, 12)).unwrap();
        let table = bigram_successors(12);
        let batch = task.batch(64, &mut HostRng::new(3));
        let (mut triggers, mut bigrams) = (0, 0);
        for (row, next) in batch.tokens.chunks(24).zip(batch.targets.chunks(24)) {
            assert_eq!(row[0], 12, "<s> first");
            for t in 0..24 {
                let (current, target) = (row[t] as usize, next[t] as usize);
                if t > 0 && current < TRIGGERS {
                    assert_eq!(target, row[t - 1] as usize, "backcopy at {t}");
                    triggers += 1;
                } else if t > 0 {
                    assert!(table[current].iter().any(|&(b, _)| b == target));
                    bigrams += 1;
                }
            }
        }
        // Triggers follow a non-trigger with probability 0.2 and never each other.
        let share = triggers as f64 / (triggers + bigrams) as f64;
        assert!((0.1..0.25).contains(&share), "{share}");
        assert!(
            TaskConfig::new(TaskKind::BigramBackcopy, 8, 5)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn repeat_segment_repeats_a_segment_of_varying_length() {
        let task = Task::new(TaskConfig::new(TaskKind::RepeatSegment, 32, 64)).unwrap();
        let batch = task.batch(200, &mut HostRng::new(5));
        let mut lengths = std::collections::BTreeSet::new();
        for (row, next) in batch.tokens.chunks(32).zip(batch.targets.chunks(32)) {
            // The shortest period is the segment's length (or divides it, for a rare segment
            // that repeats itself).
            let r = (1..32)
                .find(|&r| (r..32).all(|i| row[i] == row[i - r]))
                .unwrap();
            assert!(task.segment_lengths().contains(&r), "{r}");
            for i in 0..32 {
                assert_eq!(row[i], row[i % r], "position {i}");
                assert_eq!(next[i], row[(i + 1) % r], "target {i}");
            }
            lengths.insert(r);
        }
        assert_eq!(lengths.len(), 9, "every length 8 … 16 drawn: {lengths:?}");
        assert!(Task::new(TaskConfig::new(TaskKind::RepeatSegment, 3, 15)).is_err());
    }

    #[test]
    fn mqar_asks_every_key_once_for_its_value() {
        let task = Task::new(TaskConfig {
            keys: Some(20),
            ..TaskConfig::new(TaskKind::Mqar, 6, 10)
        })
        .unwrap();
        assert_eq!((task.seq_len(), task.n_out(), task.vocab()), (18, 6, 30));
        let batch = task.batch(50, &mut HostRng::new(2));
        for (row, answers) in batch.tokens.chunks(18).zip(batch.targets.chunks(6)) {
            let pairs: Vec<(i64, i64)> = row[..12].chunks(2).map(|p| (p[0], p[1] - 20)).collect();
            let mut asked: Vec<i64> = row[12..].to_vec();
            for (query, answer) in asked.iter().zip(answers) {
                let (_, value) = pairs.iter().find(|(k, _)| k == query).unwrap();
                assert_eq!(value, answer);
            }
            asked.sort_unstable();
            let mut keys: Vec<i64> = pairs.iter().map(|p| p.0).collect();
            keys.sort_unstable();
            assert_eq!(asked, keys, "every key asked once");
            keys.dedup();
            assert_eq!(keys.len(), 6, "distinct keys");
        }
        assert!(Task::new(TaskConfig::new(TaskKind::Mqar, 6, 5)).is_err());
        // The paired form: each pair one token, key·V + value; queries are V·keys + key.
        let paired = Task::new(TaskConfig {
            keys: Some(20),
            ..TaskConfig::new(TaskKind::MqarPaired, 6, 10)
        })
        .unwrap();
        assert_eq!((paired.seq_len(), paired.n_out()), (12, 6));
        let batch = paired.batch(50, &mut HostRng::new(2));
        for (row, answers) in batch.tokens.chunks(12).zip(batch.targets.chunks(6)) {
            for (&query, &answer) in row[6..].iter().zip(answers) {
                let key = query - 200;
                let pair = row[..6].iter().find(|&&t| t / 10 == key).unwrap();
                assert_eq!(pair % 10, answer);
            }
        }
    }
}
