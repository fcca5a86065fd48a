// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test} from "forge-std/Test.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Concord} from "../../Concord.sol";
import {deployConcord} from "./DeployConcord.sol";
import {DevToken} from "../../DevToken.sol";
import {IConcordTypes} from "../../interfaces/IConcordTypes.sol";

/// @notice Shared set-up for the Concord tests: a real DevToken, a real Concord, funded and
///         approved accounts, and helpers that play the protocol steps.
abstract contract ConcordFixture is Test {
    DevToken internal token;
    Concord internal concord;

    uint256 internal constant UNBOND_DELAY = 7 days;
    uint256 internal constant FUND = 1_000_000e18;
    uint256 internal constant STAKE = 1_000e18;
    uint96 internal constant REWARD = 100e18;
    uint96 internal constant FEE = 10e18;
    uint96 internal constant SLASH = 40e18;
    uint32 internal constant SUBMIT_S = 100;
    uint32 internal constant COMMIT_S = 50;
    uint32 internal constant REVEAL_S = 50;
    bytes32 internal constant SPEC = keccak256("spec");
    bytes32 internal constant MODEL0 = keccak256("model-0");
    uint64 internal constant MAX_WORK = 1e12;

    address internal initiator = makeAddr("initiator");
    address internal stranger = makeAddr("stranger");
    address[] internal trainers;
    address[] internal validators;

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        token = new DevToken();
        concord = deployConcord(IERC20(address(token)), UNBOND_DELAY);
        _fund(initiator);
        _fund(stranger);
    }

    // --- accounts ---------------------------------------------------------------------------

    function _fund(address who) internal {
        token.mint(who, FUND);
        vm.prank(who);
        token.approve(address(concord), type(uint256).max);
    }

    function _newNode(string memory name, IConcordTypes.Role role, uint256 stake) internal returns (address who) {
        who = makeAddr(name);
        _fund(who);
        vm.prank(who);
        concord.register(role, stake);
    }

    function _makeTrainers(uint256 n) internal {
        for (uint256 i = trainers.length; i < n; ++i) {
            trainers.push(_newNode(string.concat("trainer", vm.toString(i)), IConcordTypes.Role.Trainer, STAKE));
        }
    }

    function _makeValidators(uint256 n) internal {
        for (uint256 i = validators.length; i < n; ++i) {
            validators.push(_newNode(string.concat("validator", vm.toString(i)), IConcordTypes.Role.Validator, STAKE));
        }
    }

    // --- tasks ------------------------------------------------------------------------------

    function _params() internal pure returns (IConcordTypes.TaskParams memory p) {
        p = IConcordTypes.TaskParams({
            specDigest: SPEC,
            initialModelDigest: MODEL0,
            trainerRewardPerRound: REWARD,
            validatorFeePerRound: FEE,
            minTrainerStake: 100e18,
            minValidatorStake: 100e18,
            slashAmount: SLASH,
            submitSeconds: SUBMIT_S,
            commitSeconds: COMMIT_S,
            revealSeconds: REVEAL_S,
            maxRounds: 0,
            bountyBps: 5000,
            asyncLevel: 0,
            minValidators: 2,
            maxWorkUnits: MAX_WORK
        });
    }

    function _createTask(IConcordTypes.TaskParams memory p, uint256 budget) internal returns (uint256 id) {
        vm.prank(initiator);
        id = concord.createTask(p, budget);
    }

    /// @dev Task with `nT` joined trainers and `nV` joined validators (created on demand).
    function _taskWith(IConcordTypes.TaskParams memory p, uint256 budget, uint256 nT, uint256 nV)
        internal
        returns (uint256 id)
    {
        id = _createTask(p, budget);
        _makeTrainers(nT);
        _makeValidators(nV);
        for (uint256 i; i < nT; ++i) {
            vm.prank(trainers[i]);
            concord.join(id);
        }
        for (uint256 i; i < nV; ++i) {
            vm.prank(validators[i]);
            concord.join(id);
        }
    }

    // --- round steps ------------------------------------------------------------------------

    function _digest(address trainer, uint256 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("bundle", trainer, round));
    }

    /// @dev Every joined validator of `validators` first commits its seed share (as nodes do
    ///      early in the submit phase), so the last trainer's submission closes the phase early.
    function _submit(uint256 id, uint32 round, uint32 base, address trainer, uint64 work) internal {
        _commitShares(id, round);
        vm.prank(trainer);
        concord.submit(id, round, base, _digest(trainer, round), keccak256(abi.encode("proof", trainer)), work);
    }

    function _salt(address v, uint256 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("salt", v, round));
    }

    // --- seed shares -----------------------------------------------------------------------

    /// @dev The secret seed share validator `v` uses in `round`.
    function _share(address v, uint256 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("share", v, round));
    }

    /// @dev IConcord.commitSeedShare's hash.
    function _shareHash(bytes32 share, address v, uint256 id, uint256 round) internal pure returns (bytes32) {
        return keccak256(abi.encode(share, v, id, round));
    }

    function _commitShare(uint256 id, uint32 round, address v) internal {
        vm.prank(v);
        concord.commitSeedShare(id, round, _shareHash(_share(v, round), v, id, round));
    }

    /// @dev Every joined validator of `validators` with the task's stake that has not committed
    ///      a share to `round` does, while `round` is the head round in its submit phase.
    function _commitShares(uint256 id, uint32 round) internal {
        if (concord.currentRound(id) != round || concord.phaseOf(id, round) != IConcordTypes.Phase.Submit) return;
        uint64 done = concord.seedInfo(id, round).sharesCommitted;
        uint256 minStake = concord.taskParams(id).minValidatorStake;
        for (uint256 i; i < validators.length; ++i) {
            IConcordTypes.MemberInfo memory m = concord.memberInfo(id, validators[i]);
            if (!m.joined || done & (uint64(1) << m.validatorIndex) != 0) continue;
            if (concord.nodeInfo(validators[i]).stake < minStake) continue;
            _commitShare(id, round, validators[i]);
            if (concord.phaseOf(id, round) != IConcordTypes.Phase.Submit) return; // that share closed it
        }
    }

    /// @dev Every validator of `validators` with a pending share reveals it, while the round
    ///      takes reveals (commit phase, before shareEnd), as honest nodes do at once.
    function _revealShares(uint256 id, uint32 round) internal {
        if (concord.phaseOf(id, round) != IConcordTypes.Phase.Commit) return;
        IConcordTypes.SeedInfo memory info = concord.seedInfo(id, round);
        if (block.timestamp >= info.shareEnd) return;
        uint64 pending = info.sharesCommitted & ~info.sharesRevealed;
        for (uint256 i; i < validators.length && pending != 0; ++i) {
            IConcordTypes.MemberInfo memory m = concord.memberInfo(id, validators[i]);
            uint64 bit = uint64(1) << m.validatorIndex;
            if (!m.joined || pending & bit == 0 || concord.validatorAt(id, m.validatorIndex) != validators[i]) continue;
            vm.prank(validators[i]);
            concord.revealSeedShare(id, round, _share(validators[i], round));
            pending &= ~bit;
        }
    }

    /// @dev Fix the round's check seed as validator nodes do: reveal the shares, then fixSeed
    ///      (a share withheld by someone outside `validators`: wait for shareEnd first).
    function _fixSeed(uint256 id, uint32 round) internal {
        _revealShares(id, round);
        if (concord.fixSeed(id, round)) return;
        vm.warp(concord.seedInfo(id, round).shareEnd);
        require(concord.fixSeed(id, round), "seed not fixed at shareEnd");
    }

    /// @dev Fix the seed first when the round needs one (commit phase, with submissions).
    function _commit(uint256 id, uint32 round, address v, uint256[] memory words, bytes32 next) internal {
        if (
            concord.phaseOf(id, round) == IConcordTypes.Phase.Commit && concord.roundInfo(id, round).submissions != 0
        ) _fixSeed(id, round);
        bytes32 h = concord.commitHash(id, round, words, next, _salt(v, round), v);
        vm.prank(v);
        concord.commit(id, round, h);
    }

    function _reveal(uint256 id, uint32 round, address v, uint256[] memory words, bytes32 next) internal {
        vm.prank(v);
        concord.reveal(id, round, words, next, _salt(v, round));
    }

    function _words(uint256 n) internal pure returns (uint256[] memory) {
        return new uint256[]((n + 255) / 256);
    }

    function _oneBit(uint256 n, uint256 i) internal pure returns (uint256[] memory w) {
        w = _words(n);
        w[i / 256] |= 1 << (i % 256);
    }

    /// @dev The first `nV` validators commit, then reveal, the same `words` and `next`.
    function _voteAll(uint256 id, uint32 round, uint256 nV, uint256[] memory words, bytes32 next) internal {
        for (uint256 i; i < nV; ++i) {
            _commit(id, round, validators[i], words, next);
        }
        _warpPast(id, round, IConcordTypes.Phase.Commit);
        for (uint256 i; i < nV; ++i) {
            _reveal(id, round, validators[i], words, next);
        }
    }

    function _finalizeAll(uint256 id, uint32 round) internal {
        while (!concord.finalize(id, round, 1000)) {}
    }

    /// @dev Move past the current phase of `round` to its end. Pending seed shares are revealed
    ///      on the way (honest validators reveal as soon as the submit phase closed).
    function _warpPast(uint256 id, uint32 round, IConcordTypes.Phase phase) internal {
        if (phase != IConcordTypes.Phase.Submit) _revealShares(id, round);
        IConcordTypes.RoundInfo memory r = concord.roundInfo(id, round);
        uint256 end =
            phase == IConcordTypes.Phase.Submit ? r.submitEnd : phase == IConcordTypes.Phase.Commit ? r.commitEnd : r.revealEnd;
        if (block.timestamp < end) vm.warp(end);
        if (phase == IConcordTypes.Phase.Submit) _revealShares(id, round);
    }

    /// @dev Play a full round: every listed trainer submits on `base`, every validator
    ///      commits and reveals `rejects` (the same bitmap) and `next`, then finalize.
    function _playRound(uint256 id, uint32 round, uint32 base, uint256 nT, uint256[] memory rejects, bytes32 next)
        internal
    {
        for (uint256 i; i < nT; ++i) {
            _submit(id, round, base, trainers[i], uint64(10 + i));
        }
        _warpPast(id, round, IConcordTypes.Phase.Submit);
        _voteAll(id, round, concord.taskState(id).validators, rejects, next);
        _warpPast(id, round, IConcordTypes.Phase.Reveal);
        _finalizeAll(id, round);
    }

    function _assertConserved() internal view {
        assertEq(token.balanceOf(address(concord)), concord.totalLiabilities(), "conservation");
    }
}
