// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IConcordErrors} from "./interfaces/IConcordErrors.sol";
import {IConcordTypes} from "./interfaces/IConcordTypes.sol";

/// @title ConcordStorage
/// @notice The one storage layout of the protocol, shared by `Concord` and the
///         `ConcordSettlement` module it delegatecalls (both inherit this contract first and
///         declare no other storage), plus the small helpers both sides use.
/// @dev Layout choices, driven by the gas targets (256 submissions, 5 validators):
///      - Live rounds use a ring of `asyncLevel + 1` entries per task (round r at r % ring).
///        At most asyncLevel + 1 rounds are opened and unsettled at once (round r + ring
///        opens only after round r is finalized), so entries are reused safely, and every
///        ring entry is pre-written at task creation: submit/commit/reveal only ever update
///        non-zero slots.
///      - One storage word per submission (library `SubmissionWord`): trainer (bits 0..159) |
///        baseRound (160..191) | workUnits (192..255). bundleDigest and proofRoot live in the
///        `Submitted` event.
///      - Validators hold a per-task slot index (< _MAX_VALIDATORS = 64), so a round's
///        committed/revealed sets are two uint64 bitmasks (bit i = validator slot i).
///      - A validator's ballot ring (`asyncLevel + 1` words, pre-written at its first join)
///        holds its commitment for round r at r % ring; reveal overwrites it with the revealed
///        next-model digest, which finalize reads for the model vote.
///      - Reject bitmaps are stored per (round, validator slot, word), zero words skipped;
///        finalize tallies them.
abstract contract ConcordStorage {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    // ---------------------------------------------------------------------------------------
    // Types
    // ---------------------------------------------------------------------------------------

    /// @dev Credited balance: `amount` | `touched`. `touched` is set to 1 the first time the
    ///      account registers, creates a task or is credited and is never cleared, so the slot
    ///      never returns to zero and later credits cost a non-zero-to-non-zero write (~5k gas,
    ///      not ~22k). This keeps finalize under its per-submission gas budget.
    struct Account {
        uint128 amount;
        uint128 touched;
    }

    /// @dev One slot per node: stake (96) | unbonding (96) | unbondAt (40) | role (8) |
    ///      joinedTasks (16) = 256 bits. `stake` includes `unbonding`; the stake that counts
    ///      for joining is `stake - unbonding`.
    struct Node {
        uint96 stake;
        uint96 unbonding;
        uint40 unbondAt;
        IConcordTypes.Role role;
        uint16 joinedTasks;
    }

    /// @dev Immutable task parameters, packed so each round function reads few slots:
    ///      slot 0: initiator (160) | submitSeconds (32) | commitSeconds (32) | asyncLevel (8)
    ///              | minValidators (8) | bountyBps (16)         -- read by submit/commit/reveal
    ///      slot 1: maxWorkUnits (64) | minTrainerStake (96) | minValidatorStake (96)
    ///                                                           -- read by submit/commit
    ///      slot 2: trainerRewardPerRound (96) | validatorFeePerRound (96) | revealSeconds (32)
    ///              | maxRounds (32)                              -- read by reveal/advance
    ///      slot 3: slashAmount (96)
    ///      slot 4: specDigest
    struct TaskConfig {
        address initiator;
        uint32 submitSeconds;
        uint32 commitSeconds;
        uint8 asyncLevel;
        uint8 minValidators;
        uint16 bountyBps;
        uint64 maxWorkUnits;
        uint96 minTrainerStake;
        uint96 minValidatorStake;
        uint96 trainerReward;
        uint96 validatorFee;
        uint32 revealSeconds;
        uint32 maxRounds;
        uint96 slashAmount;
        bytes32 specDigest;
    }

    /// @dev Mutable task state in one slot: budget (96) | head (32) | finalized (32) |
    ///      trainers (16) | validators (16) | validatorSlots (8) | resumeAt (40) | closed (8)
    ///      = 248 bits. `head` is the newest opened round; rounds finalized..head are live
    ///      (none when finalized == head + 1: the task is between rounds or over).
    ///      validatorSlots is the high-water mark of slot indexes handed out.
    struct TaskSlot {
        uint96 budget;
        uint32 head;
        uint32 finalized;
        uint16 trainers;
        uint16 validators;
        uint8 validatorSlots;
        uint40 resumeAt;
        bool closed;
    }

    /// @dev Live round, slot A (240 bits): round (32) | openAt (40) | submitEnd (40) |
    ///      commitEnd (40) | revealEnd (40) | submissions (32) | touched (8) | shares (8).
    ///      A zero end means "at the deadline" (previous end + phase length); an early close
    ///      stores its time. shares counts the seed shares committed (= popcount of
    ///      RoundSeed.committed), kept here so the closing submit decides without another slot.
    struct RoundTimes {
        uint32 round;
        uint40 openAt;
        uint40 submitEnd;
        uint40 commitEnd;
        uint40 revealEnd;
        uint32 submissions;
        uint8 touched;
        uint8 shares;
    }

    /// @dev Live round, slot D (200 bits): seed shares committed (64) | shares revealed (64) |
    ///      validators that flagged (64) | touched (8). Bit i = validator slot index i. The
    ///      round's mix word is in `_mix` (its own slot: the closing submit writes only that).
    struct RoundSeed {
        uint64 committed;
        uint64 revealed;
        uint64 flagged;
        uint8 touched;
    }

    /// @dev Live round, slot B (232 bits): committed mask (64) | revealed mask (64) |
    ///      acceptedWork (96) | touched (8). Bit i of a mask = validator slot index i.
    struct RoundVotes {
        uint64 committed;
        uint64 revealed;
        uint96 acceptedWork;
        uint8 touched;
    }

    /// @dev Live round, slot C (finalize only): cursor (32) | trainerPaid (96) | decided (32).
    ///      trainerPaid is what the round's pool already paid out (the pool still reserved is
    ///      reward + fee - trainerPaid); decided counts the submissions tallied as accepted or
    ///      rejected (not tied) over every finalize page: no fee for a round with none.
    struct RoundSettle {
        uint32 cursor;
        uint96 trainerPaid;
        uint32 decided;
    }

    /// @dev Membership, one slot (136 bits): joined | role | validatorIndex | hasIndex |
    ///      hasSubmitted | lastSubmitRound (32) | joinedRound (32) | rejoinRound (32). Only the
    ///      head round takes submissions and the head only grows, so "lastSubmitRound >= round"
    ///      is the one-submission-per-round check. hasIndex: the validator holds slot
    ///      validatorIndex (cleared when it leaves). rejoinRound: set when the validator is
    ///      removed for not committing; join is refused while the head is below it.
    struct Member {
        bool joined;
        IConcordTypes.Role role;
        uint8 validatorIndex;
        bool hasIndex;
        bool hasSubmitted;
        uint32 lastSubmitRound;
        uint32 joinedRound;
        uint32 rejoinRound;
    }

    // ---------------------------------------------------------------------------------------
    // Storage
    // ---------------------------------------------------------------------------------------

    /// @dev Most validator slots a task hands out (the width of the round bitmasks).
    uint256 internal constant _MAX_VALIDATORS = 64;
    /// @dev Highest asyncLevel a task may use.
    uint256 internal constant _MAX_ASYNC_LEVEL = 4;
    uint256 internal constant _BPS = 10_000;
    uint256 internal constant _RING_MAX = _MAX_ASYNC_LEVEL + 1;
    /// @dev Settled-round record: finalizedAt in bits 0..39, this flag when the round was void.
    uint256 internal constant _VOID_FLAG = 1 << 40;
    /// @dev Most items one validator may flag per round.
    uint256 internal constant _MAX_FLAGS = 8;
    /// @dev Shortest commit phase: share reveals (first quarter), flags (first half), commits.
    uint256 internal constant _MIN_COMMIT_SECONDS = 12;
    /// @dev Rounds a validator removed for not committing waits before it may rejoin.
    uint256 internal constant _REJOIN_COOLDOWN_ROUNDS = 16;
    /// @dev Bits 0..63 of a mix word: the anchor block (0 = not anchored yet).
    uint256 internal constant _ANCHOR_MASK = type(uint64).max;
    /// @dev Mix word of a round not anchored yet: non-zero (the anchoring write then costs a
    ///      non-zero-to-non-zero store) with a zero anchor field.
    uint256 internal constant _UNANCHORED = 1 << 255;
    /// @dev Where burned stake goes.
    address internal constant _BURN_ADDRESS = 0x000000000000000000000000000000000000dEaD;

    /// @dev The protocol token (a plain ERC-20: fee-on-transfer or rebasing tokens would
    ///      break the conservation invariant and are not supported).
    IERC20 internal immutable _token;

    mapping(address account => Account) internal _accounts;
    /// @dev Liability totals. Slot: escrow | staked (uint128 each); next slot: credited.
    ///      escrow = task budgets + pools reserved by opened, unsettled rounds.
    uint128 internal _escrowTotal;
    uint128 internal _stakedTotal;
    uint128 internal _creditedTotal;
    /// @dev Slashed stake burned so far (shares the slot of `_creditedTotal`, which finalize
    ///      writes anyway). Not a liability: those tokens left the contract.
    uint128 internal _burnedTotal;

    mapping(address node => Node) internal _nodes;

    uint256 internal _taskCount;
    mapping(uint256 taskId => TaskConfig) internal _cfg;
    mapping(uint256 taskId => TaskSlot) internal _task;
    /// @dev Model digest per model index, written when the model becomes final.
    mapping(uint256 taskId => mapping(uint256 model => bytes32)) internal _model;
    /// @dev finalizedAt (bits 0..39) | _VOID_FLAG, per settled round.
    mapping(uint256 taskId => mapping(uint256 round => uint256)) internal _settled;

    mapping(uint256 taskId => mapping(uint256 ringIndex => RoundTimes)) internal _times;
    mapping(uint256 taskId => mapping(uint256 ringIndex => RoundVotes)) internal _votes;
    mapping(uint256 taskId => mapping(uint256 ringIndex => RoundSettle)) internal _settle;
    mapping(uint256 taskId => mapping(uint256 ringIndex => RoundSeed)) internal _seeds;
    /// @dev The round's mix word: bits 0..63 the anchor block A (0 = not anchored), bits
    ///      64..255 bits 64..255 of blockhash(A - 1) XOR those of every revealed seed share. The
    ///      seed is keccak256(abi.encode(taskId, round, mix)): 192 bits of randomness.
    mapping(uint256 taskId => mapping(uint256 ringIndex => uint256)) internal _mix;
    mapping(uint256 taskId => mapping(uint256 ringIndex => mapping(uint256 index => uint256))) internal _subs;
    mapping(uint256 taskId => mapping(address validator => bytes32[_RING_MAX])) internal _ballots;
    /// @dev A validator's seed-share commitment for round r at r % ring (pre-written at its
    ///      first join, like the ballots).
    mapping(uint256 taskId => mapping(address validator => bytes32[_RING_MAX])) internal _shareHashes;
    mapping(
        uint256 taskId => mapping(uint256 round => mapping(uint256 vIndex => mapping(uint256 word => uint256)))
    ) internal _rejects;
    mapping(uint256 taskId => mapping(address node => Member)) internal _members;
    mapping(uint256 taskId => mapping(uint256 vIndex => address)) internal _validatorAt;
    /// @dev What the contract holds for each task: budget + pools reserved by its open rounds.
    ///      Moves with `_escrowTotal` in every call that touches a task's escrow, so the sum
    ///      over tasks is `_escrowTotal` (checked per task by the invariant suite).
    mapping(uint256 taskId => uint256) internal _held;
    /// @dev Validator slots in use per task: bit i set = slot i held by a joined validator.
    mapping(uint256 taskId => uint64) internal _slotsInUse;
    /// @dev The check seed of each round once fixed (`IConcord.fixSeed`), kept for good: it
    ///      says which rows and inner steps each validator had to check.
    mapping(uint256 taskId => mapping(uint256 round => bytes32)) internal _checkSeed;

    // ---------------------------------------------------------------------------------------
    // Constructor
    // ---------------------------------------------------------------------------------------

    constructor(IERC20 token_) {
        _token = token_;
    }

    // ---------------------------------------------------------------------------------------
    // Internal
    // ---------------------------------------------------------------------------------------

    /// @dev A task's config; reverts for an unknown id.
    function _config(uint256 taskId) internal view returns (TaskConfig storage c) {
        c = _cfg[taskId];
        if (c.initiator == address(0)) revert IConcordErrors.UnknownTask(taskId);
    }

    /// @dev The caller's node entry; reverts when not registered.
    function _registered(address account) internal view returns (Node storage node) {
        node = _nodes[account];
        if (node.role == IConcordTypes.Role.None) revert IConcordErrors.NotRegistered(account);
    }

    /// @dev Pull `amount` tokens from the caller. Callers update the totals first (effects
    ///      before interactions) and run under `nonReentrant`. Liabilities stay within uint96,
    ///      so every budget, stake and held amount fits its slot and no later settlement step
    ///      can revert on a cast or overflow.
    function _pullTokens(uint256 amount) internal {
        uint256 liabilities = uint256(_escrowTotal) + _stakedTotal + _creditedTotal;
        if (liabilities > type(uint96).max) revert IConcordErrors.LiabilitiesCapExceeded(liabilities, type(uint96).max);
        if (amount != 0) _token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @dev Credit `amount` to `account`. The caller moves the same amount into
    ///      `_creditedTotal` (finalize batches that once per call).
    function _credit(address account, uint256 amount) internal {
        Account storage acct = _accounts[account];
        acct.amount += amount.toUint128();
        acct.touched = 1;
    }

    /// @dev Take up to `amount` from a node's stake (unbonding part included); returns what
    ///      was taken. The caller moves it out of `_stakedTotal`.
    function _slash(address account, uint256 amount) internal returns (uint256 taken) {
        Node storage node = _nodes[account];
        uint256 stake = node.stake;
        taken = amount < stake ? amount : stake;
        if (taken == 0) return 0;
        unchecked {
            stake -= taken;
        }
        node.stake = uint96(stake);
        if (node.unbonding > stake) node.unbonding = uint96(stake);
    }

    /// @dev Tokens one round reserves when it opens.
    function _perRound(TaskConfig storage c) internal view returns (uint256) {
        return uint256(c.trainerReward) + c.validatorFee;
    }

    /// @dev Add to a task budget (in memory; the caller stores `st`). When this lifts a budget
    ///      that could not pay for a round to one that can, rounds that were waiting for money
    ///      open no earlier than now.
    function _addBudget(TaskConfig storage c, TaskSlot memory st, uint256 amount) internal view {
        uint256 perRound = _perRound(c);
        uint256 before = st.budget;
        st.budget = (before + amount).toUint96();
        if (before < perRound && before + amount >= perRound) st.resumeAt = uint40(block.timestamp);
    }

    function _popcount(uint64 x) internal pure returns (uint256) {
        unchecked {
            uint256 y = x;
            y = y - ((y >> 1) & 0x5555555555555555);
            y = (y & 0x3333333333333333) + ((y >> 2) & 0x3333333333333333);
            y = (y + (y >> 4)) & 0x0f0f0f0f0f0f0f0f;
            return ((y * 0x0101010101010101) & 0xffffffffffffffff) >> 56;
        }
    }

    // ---------------------------------------------------------------------------------------
    // Internal: the check seed (the rule is in IConcord.fixSeed)
    // ---------------------------------------------------------------------------------------

    /// @dev Anchor a round now: its mix becomes this block's number | bits 64..255 of the
    ///      previous block's hash, a value fixed before any share is revealed.
    function _anchorNow(uint256 taskId, uint256 ri) internal returns (uint256 mix) {
        mix = (uint256(blockhash(block.number - 1)) & ~_ANCHOR_MASK) | block.number;
        _mix[taskId][ri] = mix;
    }

    /// @dev End of the share reveals: submitEnd + commitSeconds / 4.
    function _shareEnd(RoundTimes memory tm, TaskConfig storage c) internal view returns (uint256) {
        return _submitEnd(tm, c) + c.commitSeconds / 4;
    }

    /// @dev End of the flags: submitEnd + commitSeconds / 2.
    function _flagEnd(RoundTimes memory tm, TaskConfig storage c) internal view returns (uint256) {
        return _submitEnd(tm, c) + c.commitSeconds / 2;
    }

    function _submitEnd(RoundTimes memory tm, TaskConfig storage c) internal view returns (uint256) {
        return tm.submitEnd != 0 ? tm.submitEnd : uint256(tm.openAt) + c.submitSeconds;
    }
}
