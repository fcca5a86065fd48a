// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ConcordFixture} from "./utils/ConcordFixture.sol";
import {IConcordErrors} from "../interfaces/IConcordErrors.sol";
import {IConcordEvents} from "../interfaces/IConcordEvents.sol";
import {IConcordTypes} from "../interfaces/IConcordTypes.sol";

/// @notice The check seed made of validators' shares (issue 21): commit in the submit phase,
///         reveal after it, the block value fixed at the close, withheld shares slashed, and the
///         flags validators publish. One test per rule, named after it.
contract SeedSharesTest is ConcordFixture {
    uint256 internal id;
    bytes32 internal constant M1 = keccak256("m1");
    uint256 internal constant LOW64 = type(uint64).max;

    function setUp() public override {
        super.setUp();
        id = _taskWith(_params(), 10_000e18, 3, 3);
    }

    // --- helpers ----------------------------------------------------------------------------

    /// @dev Submissions of all three trainers, without the fixture's automatic shares.
    function _submitRaw(uint32 round) internal {
        for (uint256 i; i < 3; ++i) {
            vm.prank(trainers[i]);
            concord.submit(id, round, round, _digest(trainers[i], round), bytes32(uint256(1)), 1);
        }
    }

    function _revealShare(uint32 round, address v) internal {
        vm.prank(v);
        concord.revealSeedShare(id, round, _share(v, round));
    }

    /// @dev The seed the contract must derive: anchor block `a`, block value blockhash(a - 1)
    ///      as set by the test, and the shares of the validators in `revealed`.
    function _expectedSeed(uint32 round, uint256 a, bytes32 parentHash, address[] memory revealed)
        internal
        view
        returns (bytes32)
    {
        uint256 mix = (uint256(parentHash) & ~LOW64) | a;
        for (uint256 i; i < revealed.length; ++i) {
            mix ^= uint256(_share(revealed[i], round)) & ~LOW64;
        }
        return keccak256(abi.encode(id, uint256(round), mix));
    }

    function _all() internal view returns (address[] memory all) {
        all = new address[](3);
        for (uint256 i; i < 3; ++i) {
            all[i] = validators[i];
        }
    }

    function _closeAt(uint256 blockNumber, bytes32 parentHash) internal {
        vm.roll(blockNumber);
        vm.setBlockhash(blockNumber - 1, parentHash);
        for (uint256 i; i < 3; ++i) {
            _commitShare(id, 0, validators[i]);
        }
        _submitRaw(0);
    }

    // --- commit -----------------------------------------------------------------------------

    /// Every trainer submitted, yet the phase stays open until every validator's share is in:
    /// the closing submitter must not close it before the shares exist.
    function test_SubmitPhaseClosesOnlyOnceEveryShareIsCommitted() public {
        _submitRaw(0);
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Submit));
        _commitShare(id, 0, validators[0]);
        _commitShare(id, 0, validators[1]);
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Submit));
        vm.roll(77);
        vm.expectEmit(address(concord));
        emit IConcordEvents.SeedShareCommitted(id, 0, validators[2]);
        vm.expectEmit(address(concord));
        emit IConcordEvents.PhaseClosedEarly(id, 0, IConcordTypes.Phase.Submit);
        _commitShare(id, 0, validators[2]);
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Commit));
        IConcordTypes.SeedInfo memory info = concord.seedInfo(id, 0);
        assertEq(info.anchorBlock, 77);
        assertEq(info.sharesCommitted, 7);
        assertEq(info.shareEnd, block.timestamp + COMMIT_S / 4);
        assertEq(info.flagEnd, block.timestamp + COMMIT_S / 2);
        assertEq(info.seed, bytes32(0));
    }

    /// Shares first (the usual order): the last submission closes the phase and anchors it.
    function test_LastSubmissionClosesWhenTheSharesCameFirst() public {
        _closeAt(300, keccak256("parent"));
        assertEq(uint8(concord.phaseOf(id, 0)), uint8(IConcordTypes.Phase.Commit));
        assertEq(concord.seedInfo(id, 0).anchorBlock, 300);
    }

    function test_RevertWhen_ShareCommittedTwice() public {
        _commitShare(id, 0, validators[0]);
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.ShareAlreadyCommitted.selector, id, 0, validators[0]));
        concord.commitSeedShare(id, 0, keccak256("another"));
    }

    function test_RevertWhen_ShareCommittedAfterTheSubmitPhase() public {
        _warpPast(id, 0, IConcordTypes.Phase.Submit);
        vm.prank(validators[0]);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConcordErrors.WrongPhase.selector, id, 0, IConcordTypes.Phase.Submit, IConcordTypes.Phase.Commit
            )
        );
        concord.commitSeedShare(id, 0, keccak256("late"));
    }

    function test_RevertWhen_ShareCommittedToAnotherRound() public {
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.WrongRound.selector, id, 0, 1));
        concord.commitSeedShare(id, 1, keccak256("ahead"));
    }

    function test_RevertWhen_ShareCommittedByATrainer() public {
        vm.prank(trainers[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NotJoined.selector, id, trainers[0]));
        concord.commitSeedShare(id, 0, keccak256("t"));
    }

    function test_RevertWhen_ShareHashIsZero() public {
        vm.prank(validators[0]);
        vm.expectRevert(IConcordErrors.ZeroDigest.selector);
        concord.commitSeedShare(id, 0, bytes32(0));
    }

    // --- reveal and the seed ----------------------------------------------------------------

    /// The reveal that completes the committed shares fixes the seed at once:
    /// keccak(taskId, round, anchor | blockhash(anchor - 1) ^ shares), bits 64..255 mixed.
    function test_LastShareRevealFixesTheSeed() public {
        bytes32 parent = keccak256("block 299");
        _closeAt(300, parent);
        _revealShare(0, validators[0]);
        _revealShare(0, validators[1]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.SeedNotReady.selector, id, 0, block.timestamp + COMMIT_S / 4));
        concord.checkSeed(id, 0);
        bytes32 expected = _expectedSeed(0, 300, parent, _all());
        vm.expectEmit(address(concord));
        emit IConcordEvents.SeedShareRevealed(id, 0, validators[2], _share(validators[2], 0));
        vm.expectEmit(address(concord));
        emit IConcordEvents.CheckSeedFixed(id, 0, expected, 300, 7);
        _revealShare(0, validators[2]);
        assertEq(concord.checkSeed(id, 0), expected);
        assertEq(concord.seedInfo(id, 0).seed, expected);
        assertTrue(concord.fixSeed(id, 0));
    }

    /// Grinding the blocks after the close (what an RPC client of the devnet does with
    /// snapshot/mine/revert, or a builder with its block contents) does not move the seed: the
    /// block value was fixed at the close, before any share was revealed.
    function test_GrindingBlocksAfterTheCloseDoesNotMoveTheSeed() public {
        bytes32 parent = keccak256("block 499");
        _closeAt(500, parent);
        uint256 snap = vm.snapshotState();
        bytes32 first;
        for (uint256 k; k < 6; ++k) {
            vm.revertToState(snap);
            vm.roll(501 + k * 3);
            vm.warp(block.timestamp + k);
            vm.setBlockhash(500 + k * 3, keccak256(abi.encode("candidate", k)));
            for (uint256 i; i < 3; ++i) {
                _revealShare(0, validators[i]);
            }
            bytes32 seed = concord.checkSeed(id, 0);
            if (k == 0) first = seed;
            assertEq(seed, first, "a candidate block moved the seed");
        }
        assertEq(first, _expectedSeed(0, 500, parent, _all()));
    }

    /// The last revealer sees every other share and the block value, and so chooses between
    /// exactly two seeds: with its share (reveal) or without it (withhold, and be slashed).
    function test_LastRevealerChoosesBetweenTwoOutcomesOnly() public {
        bytes32 parent = keccak256("block 699");
        _closeAt(700, parent);
        _revealShare(0, validators[0]);
        _revealShare(0, validators[1]);
        address[] memory two = new address[](2);
        two[0] = validators[0];
        two[1] = validators[1];
        bytes32 withheld = _expectedSeed(0, 700, parent, two);
        bytes32 revealed = _expectedSeed(0, 700, parent, _all());

        uint256 snap = vm.snapshotState();
        _revealShare(0, validators[2]);
        assertEq(concord.checkSeed(id, 0), revealed);

        vm.revertToState(snap);
        vm.warp(concord.seedInfo(id, 0).shareEnd);
        assertTrue(concord.fixSeed(id, 0));
        assertEq(concord.checkSeed(id, 0), withheld);
        uint256 stake = concord.nodeInfo(validators[2]).stake;
        for (uint256 i; i < 3; ++i) {
            _commit(id, 0, validators[i], _words(3), M1);
        }
        _warpPast(id, 0, IConcordTypes.Phase.Commit);
        for (uint256 i; i < 3; ++i) {
            _reveal(id, 0, validators[i], _words(3), M1);
        }
        _finalizeAll(id, 0);
        assertEq(concord.nodeInfo(validators[2]).stake, stake - SLASH, "withholding costs the slash");
    }

    /// A withheld share holds the seed only until shareEnd; then fixSeed fixes it from the rest.
    function test_WithheldShareFixesTheSeedAtShareEnd() public {
        bytes32 parent = keccak256("block 899");
        _closeAt(900, parent);
        _revealShare(0, validators[0]);
        _revealShare(0, validators[2]);
        uint256 shareEnd = concord.seedInfo(id, 0).shareEnd;
        assertFalse(concord.fixSeed(id, 0));
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.SeedNotReady.selector, id, 0, shareEnd));
        concord.checkSeed(id, 0);
        vm.warp(shareEnd);
        address[] memory two = new address[](2);
        two[0] = validators[0];
        two[1] = validators[2];
        vm.expectEmit(address(concord));
        emit IConcordEvents.CheckSeedFixed(id, 0, _expectedSeed(0, 900, parent, two), 900, 5);
        assertTrue(concord.fixSeed(id, 0));
    }

    /// A committed share not revealed is slashed at finalize, burned, even when the validator
    /// committed and revealed its verdict.
    function test_WithheldShareIsSlashedAndBurned() public {
        _closeAt(1000, keccak256("p"));
        _revealShare(0, validators[0]);
        _revealShare(0, validators[1]);
        vm.warp(concord.seedInfo(id, 0).shareEnd);
        uint256[] memory w = _words(3);
        _voteAll(id, 0, 3, w, M1);
        _warpPast(id, 0, IConcordTypes.Phase.Reveal);
        uint256 stake = concord.nodeInfo(validators[2]).stake;
        uint256 dead = token.balanceOf(address(0xdEaD));
        vm.expectEmit(address(concord));
        emit IConcordEvents.ValidatorSlashed(id, 0, validators[2], SLASH);
        _finalizeAll(id, 0);
        assertEq(concord.nodeInfo(validators[2]).stake, stake - SLASH);
        assertEq(token.balanceOf(address(0xdEaD)) - dead, SLASH);
        assertEq(concord.burned(), SLASH);
        _assertConserved();
    }

    /// Withholding both the share and the verdict reveal costs one slash, not two.
    function test_WithheldShareAndVerdictAreSlashedOnce() public {
        _closeAt(1100, keccak256("p"));
        _revealShare(0, validators[0]);
        _revealShare(0, validators[1]);
        vm.warp(concord.seedInfo(id, 0).shareEnd);
        uint256[] memory w = _words(3);
        for (uint256 i; i < 3; ++i) {
            _commit(id, 0, validators[i], w, M1);
        }
        _warpPast(id, 0, IConcordTypes.Phase.Commit);
        _reveal(id, 0, validators[0], w, M1);
        _reveal(id, 0, validators[1], w, M1);
        _warpPast(id, 0, IConcordTypes.Phase.Reveal);
        uint256 stake = concord.nodeInfo(validators[2]).stake;
        _finalizeAll(id, 0);
        assertEq(concord.nodeInfo(validators[2]).stake, stake - SLASH);
        assertEq(concord.burned(), SLASH);
    }

    function test_RevertWhen_ShareDoesNotMatch() public {
        _closeAt(1200, keccak256("p"));
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.ShareDoesNotMatch.selector, id, 0, validators[0]));
        concord.revealSeedShare(id, 0, _share(validators[1], 0)); // another's share: bound to its sender
    }

    function test_RevertWhen_ShareRevealedTwiceOrNeverCommitted() public {
        _commitShare(id, 0, validators[0]);
        _commitShare(id, 0, validators[1]);
        _submitRaw(0);
        _warpPast(id, 0, IConcordTypes.Phase.Submit); // the fixture reveals what it committed
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.ShareAlreadyRevealed.selector, id, 0, validators[0]));
        concord.revealSeedShare(id, 0, _share(validators[0], 0));
        vm.prank(validators[2]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.ShareNotCommitted.selector, id, 0, validators[2]));
        concord.revealSeedShare(id, 0, _share(validators[2], 0));
    }

    function test_RevertWhen_ShareRevealedAfterShareEnd() public {
        _closeAt(1300, keccak256("p"));
        uint256 shareEnd = concord.seedInfo(id, 0).shareEnd;
        vm.warp(shareEnd);
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.ShareWindowClosed.selector, id, 0, shareEnd));
        concord.revealSeedShare(id, 0, _share(validators[0], 0));
    }

    function test_RevertWhen_ShareRevealedInTheSubmitPhase() public {
        _commitShare(id, 0, validators[0]);
        vm.prank(validators[0]);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConcordErrors.WrongPhase.selector, id, 0, IConcordTypes.Phase.Commit, IConcordTypes.Phase.Submit
            )
        );
        concord.revealSeedShare(id, 0, _share(validators[0], 0));
    }

    /// The anchor is a full block number: a close past 2^24 and a reveal 2^24 blocks later
    /// still give the seed of the anchor (the old 24-bit residue wrapped here).
    function test_AnchorOlderThan2To24BlocksStillGivesTheRightSeed() public {
        uint256 a = (1 << 24) + 5;
        bytes32 parent = keccak256("old parent");
        _closeAt(a, parent);
        vm.roll(a + (1 << 24) + 3);
        for (uint256 i; i < 3; ++i) {
            _revealShare(0, validators[i]);
        }
        assertEq(concord.seedInfo(id, 0).anchorBlock, a);
        assertEq(concord.checkSeed(id, 0), _expectedSeed(0, a, parent, _all()));
    }

    /// A deadline close anchors at the first call that touches the seed after it.
    function test_DeadlineCloseAnchorsAtTheFirstSeedCall() public {
        _commitShare(id, 0, validators[0]);
        vm.prank(trainers[0]);
        concord.submit(id, 0, 0, _digest(trainers[0], 0), bytes32(uint256(1)), 1);
        vm.warp(concord.roundInfo(id, 0).submitEnd);
        assertEq(concord.seedInfo(id, 0).anchorBlock, 0);
        vm.roll(4000);
        bytes32 parent = keccak256("block 3999");
        vm.setBlockhash(3999, parent);
        vm.expectEmit(address(concord));
        emit IConcordEvents.SeedAnchored(id, 0, 4000);
        _revealShare(0, validators[0]);
        address[] memory one = new address[](1);
        one[0] = validators[0];
        assertEq(concord.checkSeed(id, 0), _expectedSeed(0, 4000, parent, one));
    }

    /// With no share committed at all the seed is the block value alone, fixed at the anchor
    /// (the documented fallback, grindable by the block builder).
    function test_NoShareAtAllFixesTheSeedFromTheBlockValue() public {
        _submitRaw(0);
        _warpPast(id, 0, IConcordTypes.Phase.Submit);
        vm.roll(5000);
        bytes32 parent = keccak256("block 4999");
        vm.setBlockhash(4999, parent);
        assertTrue(concord.fixSeed(id, 0));
        assertEq(concord.checkSeed(id, 0), _expectedSeed(0, 5000, parent, new address[](0)));
    }

    function test_RevertWhen_LeaveWithAPendingShare() public {
        _commitShare(id, 0, validators[0]);
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.WorkNotFinalized.selector, id, validators[0], 0));
        concord.leave(id);
    }

    /// A validator absent from round r but holding a share of a later live round is not removed
    /// at r's finalize: its slot must stay its own until that share is revealed or slashed.
    function test_AbsentValidatorHoldingALaterShareKeepsItsSlot() public {
        IConcordTypes.TaskParams memory p = _params();
        p.asyncLevel = 1;
        p.minValidators = 1;
        uint256 t = _taskWith(p, 10_000e18, 1, 2);
        _submit(t, 0, 0, trainers[0], 10);
        _voteAll(t, 0, 2, _words(1), M1);
        _warpPast(t, 0, IConcordTypes.Phase.Reveal);
        _finalizeAll(t, 0);
        _submit(t, 1, 1, trainers[0], 10); // both shares in: round 1 closes, round 2 opens
        _commitShare(t, 2, validators[1]); // validator 1's share in round 2 ...
        _commit(t, 1, validators[0], _words(1), M1); // ... and no verdict in round 1
        _warpPast(t, 1, IConcordTypes.Phase.Commit);
        _reveal(t, 1, validators[0], _words(1), M1);
        _warpPast(t, 1, IConcordTypes.Phase.Reveal);
        _finalizeAll(t, 1);
        assertTrue(concord.memberInfo(t, validators[1]).joined, "kept: it holds round 2's share");
        assertEq(concord.validatorAt(t, 1), validators[1]);
    }

    // --- flags ------------------------------------------------------------------------------

    function _toFlags() internal {
        for (uint256 i; i < 3; ++i) {
            _submit(id, 0, 0, trainers[i], 1);
        }
        _fixSeed(id, 0);
    }

    /// bits 0..31 submission, 32..39 kind, 40..71 step k, 72..103 row n, 104..111 check code.
    function _item(uint256 index, uint256 kind, uint256 k, uint256 n, uint256 code) internal pure returns (uint256) {
        return index | kind << 32 | k << 40 | n << 72 | code << 104;
    }

    function test_FlagRecordsTheItemsAndTheFlagger() public {
        _toFlags();
        uint256[] memory items = new uint256[](2);
        items[0] = _item(2, 2, 7, 0, 9);
        items[1] = _item(0, 1, 3, 41, 4);
        vm.expectEmit(address(concord));
        emit IConcordEvents.Flagged(id, 0, validators[1], items);
        vm.prank(validators[1]);
        concord.flag(id, 0, items);
        assertEq(concord.seedInfo(id, 0).flagged, 2);
    }

    /// An empty list says "checked my sample, nothing failed".
    function test_EmptyFlagSaysNothingFailed() public {
        _toFlags();
        vm.prank(validators[0]);
        concord.flag(id, 0, new uint256[](0));
        assertEq(concord.seedInfo(id, 0).flagged, 1);
    }

    function test_RevertWhen_FlagTwice() public {
        _toFlags();
        vm.prank(validators[0]);
        concord.flag(id, 0, new uint256[](0));
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.AlreadyFlagged.selector, id, 0, validators[0]));
        concord.flag(id, 0, new uint256[](1));
    }

    function test_RevertWhen_TooManyFlags() public {
        _toFlags();
        vm.prank(validators[0]);
        concord.flag(id, 0, new uint256[](8)); // the bound itself is fine
        vm.prank(validators[1]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.TooManyFlags.selector, id, 0, 9, 8));
        concord.flag(id, 0, new uint256[](9));
    }

    function test_RevertWhen_FlagNamesNoSuchSubmission() public {
        _toFlags();
        uint256[] memory items = new uint256[](1);
        items[0] = _item(3, 1, 0, 0, 1);
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NoSuchSubmission.selector, id, 0, 3));
        concord.flag(id, 0, items);
    }

    function test_RevertWhen_FlagAfterFlagEnd() public {
        _toFlags();
        uint256 flagEnd = concord.seedInfo(id, 0).flagEnd;
        vm.warp(flagEnd);
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.FlagWindowClosed.selector, id, 0, flagEnd));
        concord.flag(id, 0, new uint256[](0));
    }

    function test_RevertWhen_FlagBeforeTheSeedIsFixed() public {
        _closeAt(1400, keccak256("p"));
        vm.prank(validators[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.SeedNotReady.selector, id, 0, block.timestamp + COMMIT_S / 4));
        concord.flag(id, 0, new uint256[](0));
    }

    function test_RevertWhen_FlagByATrainer() public {
        _toFlags();
        vm.prank(trainers[0]);
        vm.expectRevert(abi.encodeWithSelector(IConcordErrors.NotJoined.selector, id, trainers[0]));
        concord.flag(id, 0, new uint256[](0));
    }

    function test_RevertWhen_FlagInTheSubmitPhase() public {
        vm.prank(validators[0]);
        vm.expectRevert(
            abi.encodeWithSelector(
                IConcordErrors.WrongPhase.selector, id, 0, IConcordTypes.Phase.Commit, IConcordTypes.Phase.Submit
            )
        );
        concord.flag(id, 0, new uint256[](0));
    }

    /// A flag once the seed can be fixed fixes it (no separate fixSeed needed).
    function test_FlagAfterShareEndFixesTheSeed() public {
        _closeAt(1500, keccak256("p"));
        vm.warp(concord.seedInfo(id, 0).shareEnd);
        vm.prank(validators[0]);
        concord.flag(id, 0, new uint256[](0));
        assertTrue(concord.seedInfo(id, 0).seed != bytes32(0));
    }
}
