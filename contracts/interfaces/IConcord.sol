// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IConcordErrors} from "./IConcordErrors.sol";
import {IConcordEvents} from "./IConcordEvents.sol";

/// @title Concord protocol interface
/// @notice The complete external surface of the Concord protocol contract: node registry,
///         task book, round pipeline (submit, commit, reveal, finalize) and pull payments.
///         One deployed contract holds every token (stakes, task escrows, credited balances),
///         so `token.balanceOf(concord) == totalLiabilities()` at all times.
/// @dev Conventions used throughout:
///      - Token amounts are in the smallest unit of the protocol token (`token()`); they are
///        stored as uint96 (up to ~7.9e28), so any input above that reverts with OpenZeppelin's
///        `SafeCastOverflowedUintDowncast`.
///      - Rounds of a task are numbered 0, 1, 2, ...; round r turns model r into model r + 1.
///        Model 0 is the task's initial model. "Model m is final" means round m - 1 is finalized
///        (or void), i.e. `m <= finalizedRounds`.
///      - Phases are decided by block timestamps: round r opens at `openAt`; its submit phase
///        lasts `submitSeconds`, then commit `commitSeconds`, then reveal `revealSeconds`. A phase
///        closes at its deadline, or early in the transaction of the act that completes the
///        joined set (every joined trainer submitted and every joined validator committed a seed
///        share / the last joined validator commits / the last committer reveals); the next
///        phase then starts at that timestamp.
///      - Pipeline: round r + 1 opens once round r's submit phase has closed, model
///        (r + 1 - asyncLevel) is final, the task budget covers one more round and maxRounds is
///        not reached. Its `openAt` is the moment the last of these became true, whichever
///        transaction records it (`advance`, `submit`, `commit`, `join`, `topUp`, `finalize`).
///      - Reject bitmaps: submission i of a round is bit (i % 256) of word (i / 256), least
///        significant bit first; bit set = reject. A round with n submissions takes exactly
///        ceil(n / 256) words and every bit at index >= n must be zero.
interface IConcord is IConcordErrors, IConcordEvents {
    // ---------------------------------------------------------------------------------------
    // Node registry
    // ---------------------------------------------------------------------------------------

    /// @notice Register the caller as a trainer or validator, staking `amount` tokens
    ///         (pulled with transferFrom; approve first).
    function register(Role role, uint256 amount) external;

    /// @notice Add `amount` tokens to the caller's stake.
    function addStake(uint256 amount) external;

    /// @notice Start unbonding `amount` of the caller's stake; it can be released after
    ///         `unbondDelay()` seconds (a new request restarts the delay). Refused while the
    ///         caller is joined to any task. Unbonding stake stays slashable.
    function requestUnbond(uint256 amount) external;

    /// @notice Release the caller's unbonding stake into its credited balance once the delay
    ///         passed and it is joined to no task. Withdraw it with `withdraw`.
    function completeUnbond() external;

    // ---------------------------------------------------------------------------------------
    // Task book
    // ---------------------------------------------------------------------------------------

    /// @notice Create a task, escrowing `budget` tokens from the caller (transferFrom). Round 0
    ///         opens now and reserves its reward + fee, so `budget` must cover one round.
    /// @return taskId The new task's id (ids start at 1).
    function createTask(TaskParams calldata params, uint256 budget) external returns (uint256 taskId);

    /// @notice Add `amount` tokens (transferFrom the caller) to a task's budget. Anyone may,
    ///         while the task can still open a round (not closed, maxRounds not all opened).
    function topUp(uint256 taskId, uint256 amount) external;

    /// @notice Credit the leftover budget of an ended task to its initiator: a maxRounds task
    ///         whose last round is settled, or a closed task whose rounds in flight are settled.
    function reclaimBudget(uint256 taskId) external;

    /// @notice Close a task (initiator only): no further round opens; the rounds already open
    ///         run and settle as usual, then `reclaimBudget` returns what is left. The exit of
    ///         budget-limited tasks, and of tasks whose rounds keep voiding.
    function closeTask(uint256 taskId) external;

    // ---------------------------------------------------------------------------------------
    // Rounds
    // ---------------------------------------------------------------------------------------

    /// @notice Join a task with the caller's registered role; needs the task's minimum stake
    ///         for that role (stake not unbonding). A validator gets the lowest free slot index
    ///         (at most MAX_VALIDATORS at once; a slot is freed when its validator leaves or is
    ///         removed for not committing). A validator removed for not committing in round r
    ///         may join again once the head round reaches r + REJOIN_COOLDOWN_ROUNDS + 1
    ///         (`RejoinCooldown`): it is out for that many rounds.
    function join(uint256 taskId) external;

    /// @notice Leave a task. Refused while the caller has a submission, commitment or seed
    ///         share in a round that is not finalized yet.
    function leave(uint256 taskId) external;

    /// @notice Record rounds that are due to open (anyone may call; every round function does
    ///         this too). No-op when nothing is due.
    function advance(uint256 taskId) external;

    /// @notice Submit the caller's work for `round` (must be the round in its submit phase),
    ///         built on model `baseRound` (round - asyncLevel <= baseRound <= round, final).
    ///         One submission per trainer per round; a digest already seen is accepted. The
    ///         submission that completes the joined set (seed shares included) closes the phase
    ///         and anchors the round's seed (see `fixSeed`).
    /// @param bundleDigest sha256 of the submission manifest.
    /// @param proofRoot Merkle root of the TOPLOC proof hashes.
    /// @param workUnits Claimed work (reward weight); validators recompute it.
    function submit(
        uint256 taskId,
        uint32 round,
        uint32 baseRound,
        bytes32 bundleDigest,
        bytes32 proofRoot,
        uint64 workUnits
    ) external;

    /// @notice Commit the caller's seed share for `round` (a joined validator with the task's
    ///         minimum stake, while `round` is the head round in its submit phase; once per
    ///         validator and round): `shareHash = keccak256(abi.encode(share, msg.sender, taskId,
    ///         round))` with types (bytes32, address, uint256, uint256) and `share` 32 secret
    ///         random bytes. The submit phase closes early only once every joined trainer
    ///         submitted and every joined validator committed a share, so whoever closes it
    ///         knows no share. A share committed and not revealed (`revealSeedShare`) is slashed
    ///         `slashAmount` at finalize, and the validator cannot `leave` while it is pending.
    function commitSeedShare(uint256 taskId, uint32 round, bytes32 shareHash) external;

    /// @notice Reveal the caller's committed seed share: after the submit phase closed, while the
    ///         round is in its commit phase and before shareEnd = submitEnd + commitSeconds / 4.
    ///         The share's bits 64..255 are XORed into the round's mix; the reveal that completes
    ///         the committed set fixes the seed at once (see `fixSeed`).
    function revealSeedShare(uint256 taskId, uint32 round, bytes32 share) external;

    /// @notice Fix the round's check seed, the randomness validators sample their expensive
    ///         checks from (anyone may call, after the submit phase, while the round is live).
    ///         Rule: when the submit phase closes (early: in the closing `submit` or
    ///         `commitSeedShare`; at its deadline: in the first `revealSeedShare`, `fixSeed` or
    ///         `flag` after it) the round is anchored: the mix word gets the anchor block number A
    ///         in bits 0..63 and bits 64..255 of blockhash(A - 1). Each revealed share's bits
    ///         64..255 are XORed in. seed = keccak256(abi.encode(taskId, round, mix)), fixed by
    ///         the reveal that completes the committed shares, else by the first `fixSeed` at or
    ///         after shareEnd from whatever was revealed. With no share committed at all the
    ///         seed is the block value alone (fixed at the anchor): that fallback can be ground by
    ///         whoever builds block A - 1 and happens only when no validator committed a share.
    /// @return isFixed True once the seed is fixed (this call or before); false while shares
    ///         are outstanding before shareEnd (the call may still have anchored the round).
    function fixSeed(uint256 taskId, uint32 round) external returns (bool isFixed);

    /// @notice Publish the caller's evidence for `round` (a joined validator; commit phase;
    ///         seed fixed, this call fixes it if it can; before flagEnd = submitEnd +
    ///         commitSeconds / 2; once per validator and round; at most MAX_FLAGS items). An
    ///         empty list means "checked my sample, nothing failed". The contract only records
    ///         and bounds flags: honest validators re-check every flagged item before they
    ///         commit. Item layout (uint256): bits 0..31 submission index (< submissions),
    ///         32..39 kind (1 = row, 2 = inner step), 40..71 inner step k, 72..103 row n,
    ///         104..111 the failed check's code.
    function flag(uint256 taskId, uint32 round, uint256[] calldata items) external;

    /// @notice Commit to a verdict during the round's commit phase:
    ///         `commitment = commitHash(taskId, round, rejectWords, nextModelDigest, salt, msg.sender)`.
    ///         A round with submissions takes commits only once its check seed is fixed
    ///         (`SeedNotReady`): a verdict must be drawn from the seed every validator sees.
    ///         Commits are not held back by flags: an honest validator waits off chain until
    ///         every joined validator flagged or committed, or flagEnd.
    function commit(uint256 taskId, uint32 round, bytes32 commitment) external;

    /// @notice Reveal the committed verdict during the reveal phase.
    /// @param rejectWords Reject bitmap, ceil(submissions / 256) words (layout: see contract doc).
    /// @param nextModelDigest Digest of the model the validator computed for round + 1 (non-zero).
    /// @param salt The secret salt used in the commitment.
    function reveal(uint256 taskId, uint32 round, uint256[] calldata rejectWords, bytes32 nextModelDigest, bytes32 salt)
        external;

    /// @notice Settle a round after its reveal phase, doing at most `maxItems` steps (anyone
    ///         may call; repeat until it returns true). Rounds finalize in order. Steps: one per
    ///         submission to tally (slash rejected ones, bounty to their rejecters), then one per
    ///         submission to pay accepted ones pro rata to workUnits; the last call pays the
    ///         validator fee to the validators that revealed the winning digest, slashes
    ///         validators that committed a verdict or a seed share and did not reveal it (once
    ///         per validator), fixes model round+1 and returns unspent tokens to the task
    ///         budget. A submission is rejected (slashed) when more than half of the revealing
    ///         validators reject it, accepted (paid) when fewer than half do, and neither on a
    ///         tie; a tied submission's work still counts in the pro-rata denominator (its share
    ///         returns to the budget), so nobody's share grows because another was tied. No fee
    ///         is paid for a round in which no submission was decided (none, or all tied).
    ///         Slashed stake, less bounties, is burned (sent to 0x...dEaD in the same call,
    ///         `StakeBurned`): it never returns to a budget the initiator could reclaim.
    ///         Validators joined before the round opened that did not commit lose their slot and
    ///         cannot rejoin for REJOIN_COOLDOWN_ROUNDS rounds. Only a round that opened, whose
    ///         reveal phase ended and that is not settled can be finalized, once. The winning
    ///         digest needs strictly more votes than any other; on a tie the model stays (model
    ///         round+1 = model round) and the fee returns to the budget. With fewer than
    ///         minValidators reveals the round is void (one call): no trainer is slashed or
    ///         paid, no fee is paid, the model stays, but non-revealers are still slashed
    ///         (withholding a reveal is how a round gets voided).
    /// @return done True once the round is settled.
    function finalize(uint256 taskId, uint32 round, uint256 maxItems) external returns (bool done);

    // ---------------------------------------------------------------------------------------
    // Balances
    // ---------------------------------------------------------------------------------------

    /// @notice Transfer `amount` of the caller's credited balance to the caller. The only way
    ///         tokens leave the protocol.
    function withdraw(uint256 amount) external;

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @notice The protocol's ERC-20 token (stakes, escrow, rewards).
    function token() external view returns (address);

    /// @notice Seconds between requestUnbond and completeUnbond.
    function unbondDelay() external view returns (uint256);

    /// @notice Most validator slots a task hands out (bitmask width).
    function MAX_VALIDATORS() external view returns (uint256);

    /// @notice Highest asyncLevel a task may use.
    function MAX_ASYNC_LEVEL() external view returns (uint256);

    /// @notice Most items one validator may flag per round.
    function MAX_FLAGS() external view returns (uint256);

    /// @notice Shortest commit phase a task may set (it holds share reveals, flags and commits).
    function MIN_COMMIT_SECONDS() external view returns (uint256);

    /// @notice Rounds a validator removed for not committing must wait before it rejoins.
    function REJOIN_COOLDOWN_ROUNDS() external view returns (uint256);

    /// @notice A node's registry entry (role None if not registered).
    function nodeInfo(address node) external view returns (NodeInfo memory);

    /// @notice Credited balance, withdrawable with `withdraw`.
    function balanceOf(address account) external view returns (uint256);

    /// @notice Number of tasks created (ids run 1..taskCount).
    function taskCount() external view returns (uint256);

    /// @notice A task's parameters.
    function taskParams(uint256 taskId) external view returns (TaskParams memory);

    /// @notice A task's mutable state as stored.
    function taskState(uint256 taskId) external view returns (TaskState memory);

    /// @notice A node's membership of a task.
    function memberInfo(uint256 taskId, address node) external view returns (MemberInfo memory);

    /// @notice The address holding validator slot `index` of a task (zero if unassigned).
    function validatorAt(uint256 taskId, uint256 index) external view returns (address);

    /// @notice The newest opened round, counting rounds that are due but not yet recorded
    ///         (its phase, from `phaseOf`, says whether it still takes submissions).
    function currentRound(uint256 taskId) external view returns (uint32);

    /// @notice Phase of a round now.
    function phaseOf(uint256 taskId, uint32 round) external view returns (Phase);

    /// @notice Everything about a round now. Rounds more than asyncLevel+1 behind the head
    ///         keep only phase, finalizedAt and nextModelDigest (their live slot is reused).
    function roundInfo(uint256 taskId, uint32 round) external view returns (RoundInfo memory);

    /// @notice The round's fixed check seed (see `fixSeed`); reverts `SeedNotReady` before.
    function checkSeed(uint256 taskId, uint32 round) external view returns (bytes32);

    /// @notice The seed-share and flag record of a live round (see `SeedInfo`); a round no
    ///         longer live keeps only its seed.
    function seedInfo(uint256 taskId, uint32 round) external view returns (SeedInfo memory);

    /// @notice Slashed stake burned so far (all tasks), less the bounties paid out of it.
    function burned() external view returns (uint256);

    /// @notice Stored record of submission `index` of an unfinalized round.
    function submissionOf(uint256 taskId, uint32 round, uint256 index)
        external
        view
        returns (address trainer, uint32 baseRound, uint64 workUnits);

    /// @notice Whether a validator committed / revealed for a round (unfinalized rounds).
    function commitStatus(uint256 taskId, uint32 round, address validator)
        external
        view
        returns (bool committed, bool revealed);

    /// @notice Digest of model `model` of a task and whether it is final (model 0 is the
    ///         initial model; model m is fixed by finalizing round m - 1).
    function modelDigest(uint256 taskId, uint32 model) external view returns (bytes32 digest, bool isFinal);

    /// @notice The newest final model: its index and digest.
    function latestModel(uint256 taskId) external view returns (uint32 model, bytes32 digest);

    /// @notice Finalize progress of a round: steps done and total steps (2 * submissions).
    function finalizeCursor(uint256 taskId, uint32 round) external view returns (uint256 cursor, uint256 total);

    /// @notice Sums the protocol owes: escrow (task budgets + reserved round pools), stakes,
    ///         credited balances.
    function totals() external view returns (uint256 escrow, uint256 staked, uint256 credited);

    /// @notice What the contract holds for one task (`held`) and how it splits: the budget and
    ///         the pools reserved by its open rounds (reward + fee, less the rewards already
    ///         paid by a finalize in progress). Always `held == budget + reserved`, and the
    ///         sum of `held` over all tasks is the escrow of `totals()`.
    function taskEscrow(uint256 taskId) external view returns (uint256 held, uint256 budget, uint256 reserved);

    /// @notice escrow + staked + credited; always equals token.balanceOf(this).
    function totalLiabilities() external view returns (uint256);

    /// @notice The commitment a validator must post:
    ///         keccak256(abi.encode(taskId, round, rejectWords, nextModelDigest, salt, validator))
    ///         with types (uint256, uint256, uint256[], bytes32, bytes32, address).
    function commitHash(
        uint256 taskId,
        uint256 round,
        uint256[] calldata rejectWords,
        bytes32 nextModelDigest,
        bytes32 salt,
        address validator
    ) external pure returns (bytes32);
}
