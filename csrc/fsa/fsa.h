// A small FSA core: batched graphs, CTC topologies, composition with transcripts, and
// dense intersection with network log-probs (forward-backward and Viterbi).
//
// Representation (one FSA or a vector of N of them, all on the CPU):
//   arcs        int32 [A, 4]: src, dst, label, aux_label; states are numbered per FSA,
//               0 is the start and the last state (num_states - 1) the final one;
//               arcs are sorted by src, and only arcs into the final state carry label -1.
//   scores      float32 [A]: arc log-weights.
//   arc_offsets int64 [N+1]: the arcs of FSA n are arc_offsets[n] .. arc_offsets[n+1).
//   num_states  int64 [N].
// aux_label is the output label of a transducer (a topology maps network tokens to
// emitted tokens, 0 = nothing emitted). In a training graph it is the token an arc
// emits, so aux_label > 0 marks the frames where a token is first emitted (the
// attribute the delay penalty needs).
//
// Graphs are epsilon-free: every arc except those into the final state consumes one
// frame of the dense log-probs, so intersection needs no epsilon closure.
#pragma once
#include <torch/extension.h>

#include <vector>

namespace asr {

// The CTC topology over tokens 0..vocab_size-1 (0 = blank) as one transducer FSA:
// {arcs, scores, arc_offsets, num_states}. State i < vocab_size means "the last frame
// read token i"; the final state is vocab_size. From every state, blank goes to state 0
// and emits nothing, token j goes to state j and emits j, except that staying on the
// same token emits nothing (a repeat). `modified` adds, on every token state i, a second
// arc i -> i reading i that emits i again, so repeated tokens need no blank between them.
std::vector<torch::Tensor> fsa_ctc_topo_cpu(int64_t vocab_size, bool modified);

// Linear acceptors of padded targets [N, U] with lengths [N]: U_n + 2 states, arcs
// u -> u+1 with label targets[n, u] (aux_label the same), and a final arc. Labels must be > 0.
std::vector<torch::Tensor> fsa_linear_cpu(const torch::Tensor& targets, const torch::Tensor& target_lengths);

// Composition of one transducer `topo` (matched on its aux_label, epsilon = 0) with each
// of N epsilon-free acceptors (matched on their label): the training graphs
// topo o acceptor_n, trimmed to states that reach the final state. Result arcs keep the
// topology's input label and output (aux) label; scores add.
std::vector<torch::Tensor> fsa_compose_cpu(const torch::Tensor& topo_arcs, const torch::Tensor& topo_scores,
                                           int64_t topo_num_states, const torch::Tensor& arcs,
                                           const torch::Tensor& scores, const torch::Tensor& arc_offsets,
                                           const torch::Tensor& num_states);

// Dense intersection of graph n = graph_index[b] with log_probs[b, :lengths[b], :], in the
// log semiring (viterbi = false) or the tropical one (viterbi = true). An arc with label
// l taken at frame t scores  scores[a] + log_probs[b, t, l] + arc_extra[a] * frame_extra[b, t]
// (arc_extra and frame_extra may be empty: no extra scores). Arcs into the final state
// are taken after the last frame and score scores[a] only.
// Returns {total[B], alpha[sum_b (lengths[b]+1) * S_b], alpha_offsets[B+1]}, and in the
// tropical semiring also {best_arcs[B, Tmax]} (global arc index per frame, -1 past the
// length or when no path exists). total is -inf where no path exists.
std::vector<torch::Tensor> dense_intersect_forward_cpu(const torch::Tensor& arcs, const torch::Tensor& scores,
                                                       const torch::Tensor& arc_offsets,
                                                       const torch::Tensor& num_states,
                                                       const torch::Tensor& graph_index,
                                                       const torch::Tensor& log_probs, const torch::Tensor& lengths,
                                                       const torch::Tensor& arc_extra,
                                                       const torch::Tensor& frame_extra, bool viterbi);

// Gradient of sum_b grad_total[b] * total[b] with respect to log_probs (log semiring):
// the arc posteriors at each frame, summed per label. Zero for utterances whose total is
// not finite.
torch::Tensor dense_intersect_backward_cpu(const torch::Tensor& arcs, const torch::Tensor& scores,
                                           const torch::Tensor& arc_offsets, const torch::Tensor& num_states,
                                           const torch::Tensor& graph_index, const torch::Tensor& log_probs,
                                           const torch::Tensor& lengths, const torch::Tensor& arc_extra,
                                           const torch::Tensor& frame_extra, const torch::Tensor& total,
                                           const torch::Tensor& alpha, const torch::Tensor& alpha_offsets,
                                           const torch::Tensor& grad_total);

// The checks of dense_intersect_forward_cpu (check_arcs: the arcs too) and of its backward, with
// their messages: dtypes and shapes of all arguments, and the values of graph_index, lengths,
// arc_offsets, num_states and (check_arcs) arcs, which must be on the CPU; scores, log_probs and
// the extras are read for their shapes only and may be on any device. The CUDA ops call it with
// host copies of the small index tensors.
void check_dense_intersect_args(const torch::Tensor& arcs, const torch::Tensor& scores,
                                const torch::Tensor& arc_offsets, const torch::Tensor& num_states,
                                const torch::Tensor& graph_index, const torch::Tensor& log_probs,
                                const torch::Tensor& lengths, const torch::Tensor& arc_extra,
                                const torch::Tensor& frame_extra, bool check_arcs);

#ifdef ASR_WITH_CUDA
// CUDA kernels of dense intersection (dense_intersect_cuda.cu) with the same contracts, for
// log_probs and graphs on one GPU. Graph construction (ctc_topo, linear, compose) stays on the CPU.
std::vector<torch::Tensor> dense_intersect_forward_cuda(const torch::Tensor& arcs, const torch::Tensor& scores,
                                                        const torch::Tensor& arc_offsets,
                                                        const torch::Tensor& num_states,
                                                        const torch::Tensor& graph_index,
                                                        const torch::Tensor& log_probs, const torch::Tensor& lengths,
                                                        const torch::Tensor& arc_extra,
                                                        const torch::Tensor& frame_extra, bool viterbi);
torch::Tensor dense_intersect_backward_cuda(const torch::Tensor& arcs, const torch::Tensor& scores,
                                            const torch::Tensor& arc_offsets, const torch::Tensor& num_states,
                                            const torch::Tensor& graph_index, const torch::Tensor& log_probs,
                                            const torch::Tensor& lengths, const torch::Tensor& arc_extra,
                                            const torch::Tensor& frame_extra, const torch::Tensor& total,
                                            const torch::Tensor& alpha, const torch::Tensor& alpha_offsets,
                                            const torch::Tensor& grad_total);
#endif

}  // namespace asr
